// Reference CPU ops in fp32 (see ops.h for shapes and contracts).
#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/quant.h"

#include "kernels/cpu/simd.h"

namespace flint::cpu {

float dot_f32(const float* a, const float* b, int64_t n) {
#ifdef FLINT_QUANT_AVX2
  return simd::dot<float, simd::load_f32x8, simd::identity>(a, b, n);
#else
  // The same order as the SIMD path: 8 lanes, four accumulators, then the tail.
  float acc[32] = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int l = 0; l < 32; ++l) acc[l] += a[i + l] * b[i + l];
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  float lanes[8];
  for (int l = 0; l < 8; ++l) lanes[l] = (acc[l] + acc[8 + l]) + (acc[16 + l] + acc[24 + l]);
  float s = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
#endif
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
