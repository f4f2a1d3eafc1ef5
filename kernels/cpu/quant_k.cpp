// The K-quants (Q4_K, Q6_K: 256-value super-blocks): dequantization and dot
// products, scalar and AVX2. Layouts are documented on the structs in quant.h.
#include "kernels/cpu/quant.h"

#include "kernels/cpu/simd.h"

namespace flint::cpu::detail {
namespace {

inline float half(uint16_t h) { return half_to_float(h); }

// Per sub-block factors of a Q4_K block: x = dsc[s] * q - dmn[s].
struct Q4KFactors {
  float dsc[8];
  float dmn[8];
};

inline Q4KFactors q4_k_factors(const BlockQ4_K& b) {
  const float d = half(b.d), dmin = half(b.dmin);
  Q4KFactors f;
  for (int s = 0; s < 8; ++s) {
    uint8_t sc, mn;
    q4_k_scale_min(b.scales, s, &sc, &mn);
    f.dsc[s] = d * float(sc);
    f.dmn[s] = dmin * float(mn);
  }
  return f;
}

inline void deq_block(const BlockQ4_K& b, float* y) {
  const Q4KFactors f = q4_k_factors(b);
  for (int c = 0; c < 4; ++c) {
    const uint8_t* q = b.qs + 32 * c;
    float* yc = y + 64 * c;
    for (int l = 0; l < 32; ++l) {
      yc[l] = f.dsc[2 * c] * float(q[l] & 0x0F) - f.dmn[2 * c];
      yc[l + 32] = f.dsc[2 * c + 1] * float(q[l] >> 4) - f.dmn[2 * c + 1];
    }
  }
}

// d * scales[s] for each of the 16 sub-blocks of a Q6_K block.
inline void q6_k_factors(const BlockQ6_K& b, float* ds) {
  const float d = half(b.d);
  for (int s = 0; s < 16; ++s) ds[s] = d * float(b.scales[s]);
}

inline void deq_block(const BlockQ6_K& b, float* y) {
  float ds[16];
  q6_k_factors(b, ds);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* L = b.ql + 64 * h;
    const uint8_t* H = b.qh + 32 * h;
    const float* S = ds + 8 * h;
    float* yh = y + 128 * h;
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((L[l] & 0x0F) | ((H[l] & 3) << 4)) - 32;
      const int q2 = ((L[l + 32] & 0x0F) | (((H[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((L[l] >> 4) | (((H[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((L[l + 32] >> 4) | (((H[l] >> 6) & 3) << 4)) - 32;
      yh[l] = S[is] * float(q1);
      yh[l + 32] = S[is + 2] * float(q2);
      yh[l + 64] = S[is + 4] * float(q3);
      yh[l + 96] = S[is + 6] * float(q4);
    }
  }
}

template <class Block>
float dot_blocks_scalar(const Block* b, const float* x, int64_t nb) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float tmp[256];
  for (int64_t i = 0; i < nb; ++i) {
    deq_block(b[i], tmp);
    accumulate8(acc, tmp, x + i * 256, 256);
  }
  return reduce8(acc);
}

#ifdef FLINT_QUANT_AVX2
using simd::hsum;
using simd::load_u8x8;

// Q6_K, 8 values at a time from each of the four 32-value quarters of a half
// (L = ql + 64h, H = qh + 32h): values l..l+7 of quarter k go to q[k], minus 32.
// The 2 high bits come from one qh byte per value, shifted into bits 4-5.
inline void q6_k_quarters(const uint8_t* L, const uint8_t* H, int l, __m256 q[4]) {
  const __m256i low = _mm256_set1_epi32(0x0F), high = _mm256_set1_epi32(0x30);
  const __m256i bias = _mm256_set1_epi32(32);
  const __m256i a = load_u8x8(L + l), c = load_u8x8(L + l + 32), hb = load_u8x8(H + l);
  const __m256i q0 = _mm256_or_si256(_mm256_and_si256(a, low), _mm256_and_si256(_mm256_slli_epi32(hb, 4), high));
  const __m256i q1 = _mm256_or_si256(_mm256_and_si256(c, low), _mm256_and_si256(_mm256_slli_epi32(hb, 2), high));
  const __m256i q2 = _mm256_or_si256(_mm256_srli_epi32(a, 4), _mm256_and_si256(hb, high));
  const __m256i q3 = _mm256_or_si256(_mm256_srli_epi32(c, 4), _mm256_and_si256(_mm256_srli_epi32(hb, 2), high));
  q[0] = _mm256_cvtepi32_ps(_mm256_sub_epi32(q0, bias));
  q[1] = _mm256_cvtepi32_ps(_mm256_sub_epi32(q1, bias));
  q[2] = _mm256_cvtepi32_ps(_mm256_sub_epi32(q2, bias));
  q[3] = _mm256_cvtepi32_ps(_mm256_sub_epi32(q3, bias));
}
#endif

}  // namespace

void dequantize_q4_k(const BlockQ4_K* b, float* out, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) deq_block(b[i], out + i * 256);
}

void dequantize_q6_k(const BlockQ6_K* b, float* out, int64_t nb) {
#ifdef FLINT_QUANT_AVX2
  // Same products as deq_block (ds[s] * q, one rounding each), so the same bits.
  for (int64_t i = 0; i < nb; ++i) {
    float ds[16];
    q6_k_factors(b[i], ds);
    for (int h = 0; h < 2; ++h) {
      float* y = out + i * 256 + 128 * h;
      for (int l = 0; l < 32; l += 8) {
        __m256 q[4];
        q6_k_quarters(b[i].ql + 64 * h, b[i].qh + 32 * h, l, q);
        for (int k = 0; k < 4; ++k)
          _mm256_storeu_ps(y + l + 32 * k, _mm256_mul_ps(_mm256_set1_ps(ds[8 * h + l / 16 + 2 * k]), q[k]));
      }
    }
  }
#else
  for (int64_t i = 0; i < nb; ++i) deq_block(b[i], out + i * 256);
#endif
}

float dot_q4_k_scalar(const BlockQ4_K* b, const float* x, int64_t nb) { return dot_blocks_scalar(b, x, nb); }
float dot_q6_k_scalar(const BlockQ6_K* b, const float* x, int64_t nb) { return dot_blocks_scalar(b, x, nb); }

#ifdef FLINT_QUANT_AVX2
// Q4_K: each weight rebuilt as dsc[s] * q - dmn[s] with one FMA, then dotted.
float dot_q4_k_simd(const BlockQ4_K* b, const float* x, int64_t nb) {
  const __m256i low = _mm256_set1_epi32(0x0F);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t i = 0; i < nb; ++i) {
    const Q4KFactors f = q4_k_factors(b[i]);
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = b[i].qs + 32 * c;
      const float* xl = x + i * 256 + 64 * c;  // sub-block 2c (low nibbles)
      const float* xh = xl + 32;                // sub-block 2c+1 (high nibbles)
      const __m256 dl = _mm256_set1_ps(f.dsc[2 * c]), ml = _mm256_set1_ps(f.dmn[2 * c]);
      const __m256 dh = _mm256_set1_ps(f.dsc[2 * c + 1]), mh = _mm256_set1_ps(f.dmn[2 * c + 1]);
      for (int k = 0; k < 32; k += 16) {
        const __m256i v0 = load_u8x8(q + k), v1 = load_u8x8(q + k + 8);
        const __m256 w0 = _mm256_fmsub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v0, low)), dl, ml);
        const __m256 w1 = _mm256_fmsub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v1, low)), dl, ml);
        const __m256 w2 = _mm256_fmsub_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4)), dh, mh);
        const __m256 w3 = _mm256_fmsub_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4)), dh, mh);
        acc[0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xl + k), acc[0]);
        acc[1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xl + k + 8), acc[1]);
        acc[2] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xh + k), acc[2]);
        acc[3] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xh + k + 8), acc[3]);
      }
    }
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
}

float dot_q6_k_simd(const BlockQ6_K* b, const float* x, int64_t nb) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t i = 0; i < nb; ++i) {
    float ds[16];
    q6_k_factors(b[i], ds);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* L = b[i].ql + 64 * h;
      const uint8_t* H = b[i].qh + 32 * h;
      const float* xh = x + i * 256 + 128 * h;
      for (int g = 0; g < 2; ++g) {  // l in [16g, 16g + 16): scale index g (+2, +4, +6)
        __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int l = 16 * g; l < 16 * g + 16; l += 8) {
          __m256 q[4];
          q6_k_quarters(L, H, l, q);
          for (int k = 0; k < 4; ++k) s[k] = _mm256_fmadd_ps(q[k], _mm256_loadu_ps(xh + l + 32 * k), s[k]);
        }
        for (int k = 0; k < 4; ++k)
          acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(ds[8 * h + g + 2 * k]), s[k], acc[k]);
      }
    }
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
}

#endif  // FLINT_QUANT_AVX2

}  // namespace flint::cpu::detail
