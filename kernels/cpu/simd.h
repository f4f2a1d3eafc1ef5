// AVX2 building blocks shared by the CPU kernels (internal to kernels/cpu):
// 8-lane loads of each weight type, the fixed-order horizontal sum, and the
// four-accumulator dot product whose summation order the kernels rely on.
#pragma once
#include "kernels/cpu/quant.h"  // FLINT_QUANT_AVX2

#include <cstdint>

#ifdef FLINT_QUANT_AVX2
#include <immintrin.h>
#endif

namespace flint::cpu {

// fp16 bits -> float: one F16C instruction where the build has it.
inline float half_to_float(uint16_t h) {
#ifdef FLINT_QUANT_AVX2
  return _cvtsh_ss(h);
#else
  return f16_to_f32(h);
#endif
}

}  // namespace flint::cpu

#ifdef FLINT_QUANT_AVX2
namespace flint::cpu::simd {

// Sum of the 8 lanes in a fixed order.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// (a0 + a1) + (a2 + a3), then hsum: the reduction of four accumulators.
inline float hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

inline __m256 load_f32x8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load_f16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load_bf16x8(const uint16_t* p) {
  __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
// 8 bytes -> 8 int32 lanes (zero- or sign-extended).
inline __m256i load_u8x8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
inline __m256i load_i8x8(const int8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// sum w[i] * x[i] for w of element type T: value i goes to accumulator
// (i / 8) % 4 while 32 remain, then to accumulator 0 by 8s, then a scalar tail
// after the reduction.
template <class T, __m256 (*Load)(const T*), float (*Convert)(T)>
float dot(const T* w, const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(Load(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(Load(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(Load(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(Load(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(Load(w + i), _mm256_loadu_ps(x + i), a0);
  float s = hsum4(a0, a1, a2, a3);
  for (; i < n; ++i) s += Convert(w[i]) * x[i];
  return s;
}

inline float identity(float v) { return v; }

}  // namespace flint::cpu::simd

#endif  // FLINT_QUANT_AVX2
