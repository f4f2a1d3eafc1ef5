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


// 4 bytes from global to shared memory, asynchronously (cp.async.ca; the .cg form takes 16 bytes only); fill false
// writes 4 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async4(void* smem_dst, const void* src, bool fill) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = fill ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

// Asks L2 to fetch [p, p + bytes) from device memory in the background, by the copy engine of the SM (sm_90's bulk
// prefetch): a hint, nothing waits for it and no result changes. p 16-byte aligned, bytes a multiple of 16. A no-op
// below sm_90.
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#else
  (void)p, (void)bytes;
#endif
}

// Makes this thread's completed writes to shared memory (stores, finished cp.async copies) visible to the async
// proxy, through which wgmma reads its shared-memory operands.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// p's address in the shared window (what wgmma descriptors hold).
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- Hopper's warpgroup mma (sm_90a). A warpgroup is 4 consecutive warps (warp / 4); every wgmma_* below is
// called by all 128 of its threads together. Elsewhere the functions trap: the dispatcher picks the wgmma kernel
// on compute capability 9.x only.
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FLINT_NO_WGMMA 1
#endif

// Orders this thread's register accesses before the wgmmas that follow (needed before the first wgmma and after
// the A fragments or accumulators were written by other instructions).
__device__ __forceinline__ void wgmma_fence() {
#ifndef FLINT_NO_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifndef FLINT_NO_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Waits until at most kPending of this warpgroup's committed wgmma groups are still running.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
#ifndef FLINT_NO_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}

// d += a · b over the warpgroup: a is 64 weight rows × 16 k values in registers, warp w of the group holding rows
// 16w .. 16w+15 as the A fragment of mma_m16n8k16 (a0: row g, k 2t, 2t+1; a1: row g+8; a2: row g, k 2t+8, 2t+9;
// a3: row g+8); b is 16 k values × 128 columns in shared memory (descriptor desc_b, K-major: a column's 16 values
// contiguous); d is the 64 × 128 fp32 tile, thread (w, g, t) holding d[4j + r] = (row 16w + g + 8(r / 2),
// column 8j + 2t + r % 2), the mma_m16n8k16 C fragment of each 8-column block j. Asynchronous: d may be read (and
// a's registers reused) only after wgmma_commit and a wgmma_wait that covers it.
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                 uint64_t desc_b) {
#ifndef FLINT_NO_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc_b), "r"(1));
#else
  __trap();
#endif
}

// wgmma_m64n128k16 with 64 columns: d is the 64 × 64 fp32 tile, thread (w, g, t) holding d[4j + r] for the
// 8-column blocks j = 0..7 in the same layout.
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                uint64_t desc_b) {
#ifndef FLINT_NO_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc_b), "r"(1));
#else
  __trap();
#endif
}

// Ties d's registers to this point, so the compiler moves no access of d across a wgmma or a wgmma_wait.
template <int kN>
__device__ __forceinline__ void wgmma_fence_operand(float (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
}  // namespace flint::cuda
#endif  // FLINT_CUDA_EMU

namespace flint::cuda {
// The wgmma descriptor of a bf16 tile in shared memory laid out K-major with the 128-byte swizzle: rows of 64
// values (128 bytes), 8-row groups 1024 bytes apart (the stride field), 16-byte chunk c of row r stored at chunk
// c ^ (r % 8). `tile` must be 1024-byte aligned in the shared window; k_bytes (0, 32, 64 or 96) picks the 16-value
// slice a wgmma reads (the hardware applies the swizzle to the address it forms, so the slice is a plain offset).
__device__ __forceinline__ uint64_t wgmma_desc_sw128(const void* tile, int k_bytes) {
  const uint32_t addr = shared_address(tile) + uint32_t(k_bytes);
  return uint64_t((addr & 0x3FFFFu) >> 4) | uint64_t(1) << 16 | uint64_t(1024 >> 4) << 32 | uint64_t(1) << 62;
}
}  // namespace flint::cuda
