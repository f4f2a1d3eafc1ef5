// Device helpers the CUDA kernels share: the bf16 tensor-core step, cp.async copies into shared memory and
// ldmatrix loads. Included by .cu files only.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#ifdef FLINT_CUDA_EMU
#include "tests/cuda_emu/device_util_emu.h"  // the same helpers on the CPU (tests/cuda_emu/README.md)
#else
namespace flint::cuda {

// d += a · b for one m16n8k16 tile: a 16×16 bf16 (row-major fragment), b 16×8 bf16 (column-major), d fp32.
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 16 bytes from global to shared memory, asynchronously; fill false writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* src, bool fill) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = fill ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most kPending of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending)); }

// Four 8×8 b16 matrices from shared memory; lane l gives the address of row l % 8 of matrix l / 8 and receives
// (row l / 4, columns 2(l % 4), 2(l % 4) + 1) of each matrix (of its transpose with kTrans).
template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

}  // namespace flint::cuda
#endif  // FLINT_CUDA_EMU
