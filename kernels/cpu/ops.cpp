// Reference CPU ops in fp32 (see ops.h for shapes and contracts).
#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/quant.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace flint::cpu {

float dot_f32(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float tail = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  // Four independent 8-lane accumulators, reduced in a fixed order.
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  __m256 acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  tail = _mm_cvtss_f32(s);
#else
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  tail = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
#endif
  for (; i < n; ++i) tail += a[i] * b[i];
  return tail;
}

void embedding(DType t, const void* table, uint64_t row_bytes, const int32_t* ids, int64_t n,
               int64_t d, float* out) {
  const auto* base = static_cast<const uint8_t*>(table);
  for (int64_t i = 0; i < n; ++i) dequantize_row(t, base + uint64_t(ids[i]) * row_bytes, out + i * d, d);
}

void rms_norm(const float* x, const float* weight, float* out, int64_t n, int64_t d, float eps,
              ThreadPool* pool) {
  parallel_for(pool, n, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * d;
      float* o = out + r * d;
      float ss = dot_f32(xr, xr, d);
      float inv = 1.0f / std::sqrt(ss / float(d) + eps);
      for (int64_t i = 0; i < d; ++i) o[i] = xr[i] * inv * weight[i];
    }
  });
}

void add_inplace(float* x, const float* y, int64_t n, int64_t d) {
  for (int64_t i = 0; i < n * d; ++i) x[i] += y[i];
}

void add_bias(float* x, const float* bias, int64_t n, int64_t d) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < d; ++i) x[r * d + i] += bias[i];
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n, int64_t d) {
  for (int64_t i = 0; i < n * d; ++i) {
    float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void rope_inv_freq(const RopeParams& p, float* inv_freq) {
  const int32_t half = p.head_dim / 2;
  for (int32_t i = 0; i < half; ++i) {
    // HF: inv_freq = 1 / theta^(arange(0, hd, 2) / hd), computed in fp32.
    float f = 1.0f / std::pow(p.theta, float(2 * i) / float(p.head_dim));
    if (p.scaling_factor > 0.0f) {
      // Llama-3 scaling: long wavelengths slowed by `factor`, short kept, a
      // smooth ramp between (transformers' _compute_llama3_parameters).
      const float pi = 3.14159265358979323846f;
      float low_wavelen = float(p.original_max_position) / p.low_freq_factor;
      float high_wavelen = float(p.original_max_position) / p.high_freq_factor;
      float wavelen = 2.0f * pi / f;
      if (wavelen > low_wavelen) {
        f = f / p.scaling_factor;
      } else if (wavelen >= high_wavelen) {
        float smooth = (float(p.original_max_position) / wavelen - p.low_freq_factor) /
                       (p.high_freq_factor - p.low_freq_factor);
        f = (1.0f - smooth) * f / p.scaling_factor + smooth * f;
      }
    }
    inv_freq[i] = f;
  }
}

void rope(float* x, const int32_t* positions, int64_t n, int64_t num_heads, const RopeParams& p,
          const float* inv_freq) {
  const int64_t hd = p.head_dim, half = hd / 2;
  std::vector<float> cos_t(static_cast<size_t>(half)), sin_t(static_cast<size_t>(half));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      float angle = float(positions[t]) * inv_freq[i];
      cos_t[size_t(i)] = std::cos(angle);
      sin_t[size_t(i)] = std::sin(angle);
    }
    for (int64_t h = 0; h < num_heads; ++h) {
      float* v = x + (t * num_heads + h) * hd;
      for (int64_t i = 0; i < half; ++i) {
        int64_t a = p.style == RopeStyle::Halves ? i : 2 * i;
        int64_t b = p.style == RopeStyle::Halves ? i + half : 2 * i + 1;
        float x0 = v[a], x1 = v[b], c = cos_t[size_t(i)], s = sin_t[size_t(i)];
        v[a] = x0 * c - x1 * s;
        v[b] = x1 * c + x0 * s;
      }
    }
  }
}

float softmax(const float* logits, float* probs, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    probs[i] = std::exp(logits[i] - mx);
    sum += probs[i];
  }
  float inv = float(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) probs[i] *= inv;
  return mx + float(std::log(sum));
}

}  // namespace flint::cpu
