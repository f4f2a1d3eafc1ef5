// Dequantization and dot products over weight rows stored in any DType.
// These are the CPU reference twins for the weight formats Flint reads.
#pragma once
#include <cstdint>

#include "kernels/dtype.h"

namespace flint::cpu {

// Scalar conversions (round-to-nearest-even where narrowing).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

// row (n values of type t, n a multiple of t's block size) -> out (n floats)
void dequantize_row(DType t, const void* row, float* out, int64_t n);

// sum_i row[i] * x[i] over n values; row in type t, x in fp32.
float dot_row(DType t, const void* row, const float* x, int64_t n);

}  // namespace flint::cpu
