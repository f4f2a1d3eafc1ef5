// fp16/bf16 conversions, and dequantize_row / dot_row for the plain types and the
// 32-value quants (Q8_0, Q4_0, Q4_1), scalar and AVX2. K-quants: quant_k.cpp.
#include "kernels/cpu/quant.h"

#include <bit>
#include <cstring>

#include "kernels/cpu/simd.h"

namespace flint::cpu {

// ---- conversions ----------------------------------------------------------

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));  // inf, nan
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
  // zero or subnormal: mant * 2^-24, exact in fp32
  const float v = float(mant) * 0x1p-24f;
  return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(v));
}

uint16_t f32_to_f16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return uint16_t(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));  // quiet nan
  if (ax >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // >= 65520 rounds to inf
  if (ax >= 0x38800000u) {                                  // normal half (>= 2^-14)
    uint32_t m = ax - 0x38000000u;                          // rebias exponent 127 -> 15
    m += 0xFFFu + ((m >> 13) & 1u);                         // round to nearest even
    return uint16_t(sign | (m >> 13));
  }
  // Subnormal half: adding 0.5f (ulp 2^-24) rounds |f| to a multiple of 2^-24
  // in hardware (to nearest even); the mantissa then holds that multiple.
  const float r = std::bit_cast<float>(ax) + 0.5f;
  return uint16_t(sign | (std::bit_cast<uint32_t>(r) - std::bit_cast<uint32_t>(0.5f)));
}

float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

uint16_t f32_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((x >> 16) | 0x40u);  // quiet nan
  return uint16_t((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

namespace {

inline float half(uint16_t h) { return half_to_float(h); }

// ---- one block -> floats --------------------------------------------------

inline void deq_block(const BlockQ8_0& b, float* y) {
  const float d = half(b.d);
  for (int i = 0; i < 32; ++i) y[i] = d * float(b.qs[i]);
}

// q·d + (-8d), as the AVX2 path computes it: the same value as d·(q - 8) (every step is exact), and the same
// zero: +0 where d·(q - 8) would give -0 for a negative d, so scalar, AVX2 and GPU dequantisation agree bit for bit.
inline void deq_block(const BlockQ4_0& b, float* y) {
  const float d = half(b.d), m = -8.0f * d;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(b.qs[j] & 0x0F) * d + m;
    y[j + 16] = float(b.qs[j] >> 4) * d + m;
  }
}

inline void deq_block(const BlockQ4_1& b, float* y) {
  const float d = half(b.d), m = half(b.m);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(b.qs[j] & 0x0F) + m;
    y[j + 16] = d * float(b.qs[j] >> 4) + m;
  }
}

// Scalar dot over 32-value blocks: dequantize a block, then 8-lane accumulate.
template <class Block>
float dot_blocks_scalar(const void* row, const float* x, int64_t nb) {
  const auto* b = static_cast<const Block*>(row);
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float tmp[32];
  for (int64_t i = 0; i < nb; ++i) {
    deq_block(b[i], tmp);
    detail::accumulate8(acc, tmp, x + i * 32, 32);
  }
  return detail::reduce8(acc);
}

// Plain 16-bit types: convert in chunks (a multiple of 8, so lanes stay aligned).
template <float (*Convert)(uint16_t)>
float dot_u16_scalar(const uint16_t* w, const float* x, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float tmp[256];
  for (int64_t i = 0; i < n; i += 256) {
    const int64_t len = n - i < 256 ? n - i : 256;
    for (int64_t j = 0; j < len; ++j) tmp[j] = Convert(w[i + j]);
    detail::accumulate8(acc, tmp, x + i, len);
  }
  return detail::reduce8(acc);
}

#ifdef FLINT_QUANT_AVX2
// ---- AVX2 -----------------------------------------------------------------

using simd::hsum;
using simd::load_bf16x8;
using simd::load_f16x8;
using simd::load_i8x8;
using simd::load_u8x8;

// Q8_0: sum_b d_b * sum_i q_i x_i. Two blocks per step, one accumulator each.
inline __m256 q8_0_partial(const BlockQ8_0& b, const float* x) {
  __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(load_i8x8(b.qs)), _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(load_i8x8(b.qs + 8)), _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(load_i8x8(b.qs + 16)), _mm256_loadu_ps(x + 16), s);
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(load_i8x8(b.qs + 24)), _mm256_loadu_ps(x + 24), s);
}

float dot_q8_0_avx2(const BlockQ8_0* b, const float* x, int64_t nb) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(half(b[i].d)), q8_0_partial(b[i], x + i * 32), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(half(b[i + 1].d)), q8_0_partial(b[i + 1], x + i * 32 + 32),
                           acc1);
  }
  if (i < nb) acc0 = _mm256_fmadd_ps(_mm256_set1_ps(half(b[i].d)), q8_0_partial(b[i], x + i * 32), acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

// Q4_0 / Q4_1: each weight is rebuilt as w = d*q + m (Q4_0: m = -8d) with one FMA
// and dotted into four accumulators, so x is loaded once. Widening bytes 0-7
// gives values 0-7 (low nibbles) and 16-23 (high nibbles); bytes 8-15 give 8-15
// and 24-31.
struct Accum4 {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  float sum() const { return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))); }
};

inline void nibble_block_dot(const uint8_t* qs, __m256 d, __m256 m, const float* x, Accum4& acc) {
  const __m256i low = _mm256_set1_epi32(0x0F);
  const __m256i v0 = load_u8x8(qs), v1 = load_u8x8(qs + 8);
  const __m256 w0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v0, low)), d, m);
  const __m256 w1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v1, low)), d, m);
  const __m256 w2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4)), d, m);
  const __m256 w3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4)), d, m);
  acc.a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), acc.a0);
  acc.a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + 8), acc.a1);
  acc.a2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x + 16), acc.a2);
  acc.a3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x + 24), acc.a3);
}

float dot_q4_1_avx2(const BlockQ4_1* b, const float* x, int64_t nb) {
  Accum4 acc;
  for (int64_t i = 0; i < nb; ++i) {
    // d and m are adjacent: convert both with one instruction.
    uint32_t dm;
    std::memcpy(&dm, &b[i], 4);
    const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(int(dm)));
    nibble_block_dot(b[i].qs, _mm256_broadcastss_ps(f), _mm256_broadcastss_ps(_mm_movehdup_ps(f)), x + i * 32, acc);
  }
  return acc.sum();
}

float dot_q4_0_avx2(const BlockQ4_0* b, const float* x, int64_t nb) {
  Accum4 acc;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = half(b[i].d);
    nibble_block_dot(b[i].qs, _mm256_set1_ps(d), _mm256_set1_ps(-8.0f * d), x + i * 32, acc);
  }
  return acc.sum();
}

// Dequantization. Each weight is one rounding of an exact product (d*q fits in
// fp32), as in deq_block, so both paths give the same bits.
void deq_q8_0_avx2(const BlockQ8_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const __m256 d = _mm256_set1_ps(half(b[i].d));
    for (int k = 0; k < 32; k += 8) _mm256_storeu_ps(y + k, _mm256_mul_ps(_mm256_cvtepi32_ps(load_i8x8(b[i].qs + k)), d));
  }
}

inline void deq_nibbles_avx2(const uint8_t* qs, __m256 d, __m256 m, float* y) {  // y = d*q + m
  const __m256i low = _mm256_set1_epi32(0x0F);
  const __m256i v0 = load_u8x8(qs), v1 = load_u8x8(qs + 8);
  _mm256_storeu_ps(y, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v0, low)), d), m));
  _mm256_storeu_ps(y + 8, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v1, low)), d), m));
  _mm256_storeu_ps(y + 16, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4)), d), m));
  _mm256_storeu_ps(y + 24, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4)), d), m));
}
#endif  // FLINT_QUANT_AVX2

void dequantize_q8_0(const BlockQ8_0* b, float* y, int64_t nb) {
#ifdef FLINT_QUANT_AVX2
  deq_q8_0_avx2(b, y, nb);
#else
  for (int64_t i = 0; i < nb; ++i) deq_block(b[i], y + i * 32);
#endif
}

void dequantize_q4_0(const BlockQ4_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
#ifdef FLINT_QUANT_AVX2
    const float d = half(b[i].d);
    deq_nibbles_avx2(b[i].qs, _mm256_set1_ps(d), _mm256_set1_ps(-8.0f * d), y + i * 32);
#else
    deq_block(b[i], y + i * 32);
#endif
  }
}

void dequantize_q4_1(const BlockQ4_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
#ifdef FLINT_QUANT_AVX2
    deq_nibbles_avx2(b[i].qs, _mm256_set1_ps(half(b[i].d)), _mm256_set1_ps(half(b[i].m)), y + i * 32);
#else
    deq_block(b[i], y + i * 32);
#endif
  }
}

int64_t num_blocks(DType t, int64_t n) { return n / dtype_info(t).block_size; }

}  // namespace

// ---- public entry points --------------------------------------------------

void dequantize_row(DType t, const void* row, float* out, int64_t n) {
  const int64_t nb = num_blocks(t, n);
  const auto* u16 = static_cast<const uint16_t*>(row);
  switch (t) {
    case DType::F32: std::memcpy(out, row, size_t(n) * sizeof(float)); return;
    case DType::F16: {
      int64_t i = 0;
#ifdef FLINT_QUANT_AVX2
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load_f16x8(u16 + i));
#endif
      for (; i < n; ++i) out[i] = f16_to_f32(u16[i]);
      return;
    }
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(u16[i]);
      return;
    case DType::Q8_0: dequantize_q8_0(static_cast<const BlockQ8_0*>(row), out, nb); return;
    case DType::Q4_0: dequantize_q4_0(static_cast<const BlockQ4_0*>(row), out, nb); return;
    case DType::Q4_1: dequantize_q4_1(static_cast<const BlockQ4_1*>(row), out, nb); return;
    case DType::Q4_K: detail::dequantize_q4_k(static_cast<const BlockQ4_K*>(row), out, nb); return;
    case DType::Q6_K: detail::dequantize_q6_k(static_cast<const BlockQ6_K*>(row), out, nb); return;
  }
}

namespace detail {

float dot_row_scalar(DType t, const void* row, const float* x, int64_t n) {
  const int64_t nb = num_blocks(t, n);
  switch (t) {
    case DType::F32: {
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      accumulate8(acc, static_cast<const float*>(row), x, n);
      return reduce8(acc);
    }
    case DType::F16: return dot_u16_scalar<f16_to_f32>(static_cast<const uint16_t*>(row), x, n);
    case DType::BF16: return dot_u16_scalar<bf16_to_f32>(static_cast<const uint16_t*>(row), x, n);
    case DType::Q8_0: return dot_blocks_scalar<BlockQ8_0>(row, x, nb);
    case DType::Q4_0: return dot_blocks_scalar<BlockQ4_0>(row, x, nb);
    case DType::Q4_1: return dot_blocks_scalar<BlockQ4_1>(row, x, nb);
    case DType::Q4_K: return dot_q4_k_scalar(static_cast<const BlockQ4_K*>(row), x, nb);
    case DType::Q6_K: return dot_q6_k_scalar(static_cast<const BlockQ6_K*>(row), x, nb);
  }
  return 0.0f;
}

bool dot_row_is_simd() {
#ifdef FLINT_QUANT_AVX2
  return true;
#else
  return false;
#endif
}

}  // namespace detail

float dot_row(DType t, const void* row, const float* x, int64_t n) {
#ifdef FLINT_QUANT_AVX2
  const int64_t nb = num_blocks(t, n);
  switch (t) {
    case DType::F32: return simd::dot<float, simd::load_f32x8, simd::identity>(static_cast<const float*>(row), x, n);
    case DType::F16:
      return simd::dot<uint16_t, load_f16x8, f16_to_f32>(static_cast<const uint16_t*>(row), x, n);
    case DType::BF16:
      return simd::dot<uint16_t, load_bf16x8, bf16_to_f32>(static_cast<const uint16_t*>(row), x, n);
    case DType::Q8_0: return dot_q8_0_avx2(static_cast<const BlockQ8_0*>(row), x, nb);
    case DType::Q4_0: return dot_q4_0_avx2(static_cast<const BlockQ4_0*>(row), x, nb);
    case DType::Q4_1: return dot_q4_1_avx2(static_cast<const BlockQ4_1*>(row), x, nb);
    case DType::Q4_K: return detail::dot_q4_k_simd(static_cast<const BlockQ4_K*>(row), x, nb);
    case DType::Q6_K: return detail::dot_q6_k_simd(static_cast<const BlockQ6_K*>(row), x, nb);
  }
  return 0.0f;
#else
  return detail::dot_row_scalar(t, row, x, n);
#endif
}

}  // namespace flint::cpu
