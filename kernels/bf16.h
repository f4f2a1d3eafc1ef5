// bf16 <-> fp32 on the host, header-only, for the CPU twins of the CUDA kernels (which link without the rest of
// kernels/cpu on the GPU machine). Round to nearest even, as __float2bfloat16_rn does.
#pragma once
#include <bit>
#include <cstdint>

#include "kernels/matmul_params.h"  // bf16_bits

namespace flint {

inline float bf16_bits_to_f32(bf16_bits h) { return std::bit_cast<float>(uint32_t(h) << 16); }

inline bf16_bits f32_to_bf16_bits(float f) {  // NaN stays a (quiet) NaN
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return bf16_bits((x >> 16) | 0x40u);
  return bf16_bits((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace flint
