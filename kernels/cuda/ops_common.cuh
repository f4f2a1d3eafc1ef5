// Device helpers shared by kernels/cuda/ops.cu and dequant.cu: bit-exact conversions (the same integer operations
// as kernels/cpu/quant.cpp's, so NaNs and subnormals come out as the CPU twin's do) and the launchers' checks.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace flint::cuda::ops_detail {

__device__ __forceinline__ float bf16_to_f32(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }

// Round to nearest even; NaN stays a quiet NaN with its sign and top payload bits (cpu::f32_to_bf16).
__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
  const uint32_t x = __float_as_uint(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((x >> 16) | 0x40u);
  return uint16_t((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

// cpu::f16_to_f32, exactly (subnormals as mant · 2^-24, NaN payloads kept).
__device__ __forceinline__ float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return __uint_as_float(sign | 0x7F800000u | (mant << 13));
  if (exp != 0) return __uint_as_float(sign | ((exp + 112) << 23) | (mant << 13));
  return __uint_as_float(sign | __float_as_uint(__fmul_rn(float(mant), 0x1p-24f)));
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

inline cudaError_t invalid(std::string why, std::string* error) {
  if (error) *error = std::move(why);
  return cudaErrorInvalidValue;
}

}  // namespace flint::cuda::ops_detail
