// Dequantization and dot products over weight rows stored in any DType.
// These are the CPU reference twins for the weight formats Flint reads.
#pragma once
#include <cstdint>

#include "kernels/dtype.h"

// The SIMD paths need AVX2, FMA and F16C (the build uses -march=native).
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define FLINT_QUANT_AVX2 1
#endif

namespace flint::cpu {

// Scalar conversions (round-to-nearest-even where narrowing).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

// row (n values of type t, n a multiple of t's block size) -> out (n floats)
// PRECOND: row is 2-byte aligned (4-byte for F32); GGUF tensor data always is.
void dequantize_row(DType t, const void* row, float* out, int64_t n);

// sum_i row[i] * x[i] over n values; row in type t, x in fp32.
// Deterministic: the same inputs give the same bits on every call and thread.
// Uses AVX2+FMA+F16C when the build targets them, else the scalar path below.
float dot_row(DType t, const void* row, const float* x, int64_t n);

// ggml's block layouts, byte for byte (little-endian; d, m, dmin are fp16 bits).
// Within a 32-value block of Q4_0/Q4_1, byte j holds value j in its low nibble
// and value j+16 in its high nibble.
struct BlockQ8_0 {  // x[i] = d * qs[i]
  uint16_t d;
  int8_t qs[32];
};
struct BlockQ4_0 {  // x[j] = d * (nibble_j - 8)
  uint16_t d;
  uint8_t qs[16];
};
struct BlockQ4_1 {  // x[j] = d * nibble_j + m
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
// Q4_K: 256 values = 8 sub-blocks of 32. Sub-block s has a 6-bit scale sc[s] and
// 6-bit min mn[s] packed in `scales` (see q4_k_scale_min); its values are
// x = d * sc[s] * q - dmin * mn[s]. Chunk c (values 64c..64c+63) keeps its nibbles
// in qs[32c..32c+31]: low nibbles are sub-block 2c, high nibbles sub-block 2c+1.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
// Q6_K: 256 values = 16 sub-blocks of 16, x = d * scales[s] * (q - 32), q 6-bit.
// Half h (values 128h..128h+127) uses ql[64h..], qh[32h..], scales[8h..]; for
// l < 32, with L = ql + 64h and H = qh + 32h:
//   value l      : low nibble of L[l]     | bits 0-1 of H[l] << 4, scale index l/16
//   value l + 32 : low nibble of L[l+32]  | bits 2-3 of H[l] << 4, scale index l/16 + 2
//   value l + 64 : high nibble of L[l]    | bits 4-5 of H[l] << 4, scale index l/16 + 4
//   value l + 96 : high nibble of L[l+32] | bits 6-7 of H[l] << 4, scale index l/16 + 6
struct BlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
static_assert(sizeof(BlockQ8_0) == dtype_info(DType::Q8_0).block_bytes);
static_assert(sizeof(BlockQ4_0) == dtype_info(DType::Q4_0).block_bytes);
static_assert(sizeof(BlockQ4_1) == dtype_info(DType::Q4_1).block_bytes);
static_assert(sizeof(BlockQ4_K) == dtype_info(DType::Q4_K).block_bytes);
static_assert(sizeof(BlockQ6_K) == dtype_info(DType::Q6_K).block_bytes);

// The 6-bit scale and min of Q4_K sub-block s (0..7), unpacked from `scales`:
//   s < 4: sc = scales[s] & 63, mn = scales[s+4] & 63
//   s >= 4: low 4 bits from scales[s+4] (sc: low nibble, mn: high nibble),
//           high 2 bits from the top bits of scales[s-4] (sc) and scales[s] (mn).
inline void q4_k_scale_min(const uint8_t* scales, int s, uint8_t* sc, uint8_t* mn) {
  if (s < 4) {
    *sc = scales[s] & 63;
    *mn = scales[s + 4] & 63;
  } else {
    *sc = uint8_t((scales[s + 4] & 0x0F) | ((scales[s - 4] >> 6) << 4));
    *mn = uint8_t((scales[s + 4] >> 4) | ((scales[s] >> 6) << 4));
  }
}

namespace detail {
// acc[i % 8] += a[i] * b[i]: the scalar twin of an 8-lane FMA loop.
inline void accumulate8(float* acc, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i & 7] += a[i] * b[i];
}
// Sums the 8 lanes in the order the SIMD paths do.
inline float reduce8(const float* acc) {
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// The portable path, always compiled: dot_row's SIMD path agrees with it within
// fp32 rounding. Exposed so tests compare the two.
float dot_row_scalar(DType t, const void* row, const float* x, int64_t n);
// True when dot_row uses the AVX2 path in this build.
bool dot_row_is_simd();

// Per-type kernels shared between quant.cpp and quant_k.cpp (nb = number of blocks).
void dequantize_q4_k(const BlockQ4_K* b, float* out, int64_t nb);
void dequantize_q6_k(const BlockQ6_K* b, float* out, int64_t nb);
float dot_q4_k_scalar(const BlockQ4_K* b, const float* x, int64_t nb);
float dot_q6_k_scalar(const BlockQ6_K* b, const float* x, int64_t nb);
float dot_q4_k_simd(const BlockQ4_K* b, const float* x, int64_t nb);  // AVX2 builds only
float dot_q6_k_simd(const BlockQ6_K* b, const float* x, int64_t nb);  // AVX2 builds only
}  // namespace detail

}  // namespace flint::cpu
