// kernels/cuda/device_util.cuh's helpers for the CUDA emulator: the same signatures, implemented as the PTX ISA
// defines the instructions (mma.sync.m16n8k16 bf16 fragments, ldmatrix.x4 with and without .trans, cp.async with
// its commit and wait groups, wgmma m64n128k16 and m64n64k16 with their commit and wait groups; the L2 bulk prefetch
// as a check of its range, as it does nothing else here). Included by device_util.cuh when
// FLINT_CUDA_EMU is defined.
#pragma once
#include <cstdint>

#include "tests/cuda_emu/cuda_emu.h"

namespace cuda_emu {
void mma_bf16_m16n8k16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1);
void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row, bool trans);
void cp_async16(void* smem_dst, const void* src, bool fill);
void cp_async4(void* smem_dst, const void* src, bool fill);
uint32_t shared_offset(const void* p);  // p's offset in the launch's dynamic shared memory
void wgmma_bf16_m64n128k16(float (&d)[64], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint64_t desc_b);
void wgmma_bf16_m64n64k16(float (&d)[32], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint64_t desc_b);
void wgmma_commit();
void wgmma_wait(int pending);
void cp_async_commit();
void cp_async_wait(int pending);
void prefetch_l2(const void* p, uint32_t bytes);  // checks the range: aligned, inside one device allocation
}  // namespace cuda_emu

namespace flint::cuda {
inline void mma_m16n8k16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  cuda_emu::mma_bf16_m16n8k16(d, a0, a1, a2, a3, b0, b1);
}
inline void cp_async16(void* smem_dst, const void* src, bool fill) { cuda_emu::cp_async16(smem_dst, src, fill); }
inline void cp_async4(void* smem_dst, const void* src, bool fill) { cuda_emu::cp_async4(smem_dst, src, fill); }
inline void prefetch_l2(const void* p, uint32_t bytes) { cuda_emu::prefetch_l2(p, bytes); }
inline uint32_t shared_address(const void* p) { return cuda_emu::shared_offset(p); }
inline void wgmma_fence() {}
inline void fence_proxy_async() {}
inline void wgmma_commit() { cuda_emu::wgmma_commit(); }
template <int kPending>
inline void wgmma_wait() { cuda_emu::wgmma_wait(kPending); }
inline void wgmma_m64n128k16(float (&d)[64], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint64_t desc_b) {
  cuda_emu::wgmma_bf16_m64n128k16(d, a0, a1, a2, a3, desc_b);
}
inline void wgmma_m64n64k16(float (&d)[32], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint64_t desc_b) {
  cuda_emu::wgmma_bf16_m64n64k16(d, a0, a1, a2, a3, desc_b);
}
template <int kN>
inline void wgmma_fence_operand(float (&)[kN]) {}
inline void cp_async_commit() { cuda_emu::cp_async_commit(); }
template <int kPending>
inline void cp_async_wait() { cuda_emu::cp_async_wait(kPending); }
template <bool kTrans>
inline void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) { cuda_emu::ldmatrix_x4(r, smem_row, kTrans); }
}  // namespace flint::cuda
