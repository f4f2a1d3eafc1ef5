// The bf16 matmul's CPU twin: plain loops in the order kernels/matmul_params.h defines, no SIMD, so the order is
// the one written here whatever the compiler does (no -ffast-math: it may not reassociate).
#include "kernels/cpu/matmul_bf16.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "kernels/bf16.h"

namespace flint::cpu {

namespace {

float bf16_to_f32(bf16_bits h) { return bf16_bits_to_f32(h); }
bf16_bits f32_to_bf16(float f) { return f32_to_bf16_bits(f); }

// The value stored for one output: bf16 (round to nearest even) or fp32.
void store(void* base, int64_t ld, int m, int col, MatmulOut type, float v) {
  if (type == MatmulOut::F32) static_cast<float*>(base)[int64_t(m) * ld + col] = v;
  else static_cast<bf16_bits*>(base)[int64_t(m) * ld + col] = f32_to_bf16(v);
}

}  // namespace

void matmul_bf16(const MatmulParams& p) {
  if (std::string e = matmul_params_error(p, false); !e.empty()) throw Error(e);
  const int S = matmul_num_splits(p.N, p.K), len = matmul_split_len(p.N, p.K);
  std::vector<float> xf(size_t(p.K)), acc(size_t(p.N));
  for (int m = 0; m < p.M; ++m) {
    const bf16_bits* xr = p.x + int64_t(m) * p.ldx;
    for (int k = 0; k < p.K; ++k) xf[size_t(k)] = bf16_to_f32(xr[k]);
    for (int n = 0; n < p.N; ++n) {
      const bf16_bits* wr = p.w + int64_t(n) * p.ldw;
      float total = 0.0f;
      for (int s = 0; s < S; ++s) {
        const int k1 = std::min(p.K, (s + 1) * len);
        float part = 0.0f;
        for (int k = s * len; k < k1; ++k) part += xf[size_t(k)] * bf16_to_f32(wr[k]);
        total = s == 0 ? part : total + part;
      }
      acc[size_t(n)] = p.maybe_bias ? total + bf16_to_f32(p.maybe_bias[n]) : total;
    }
    switch (p.epilogue) {
      case MatmulEpilogue::None:
        for (int n = 0; n < p.N; ++n) store(p.y, p.ldy, m, n, p.out_type, acc[size_t(n)]);
        break;
      case MatmulEpilogue::Qkv:
        for (int n = 0; n < p.N; ++n) {
          if (n < p.num_q) store(p.y, p.ldy, m, n, p.out_type, acc[size_t(n)]);
          else if (n < p.num_q + p.num_kv) store(p.k_out, p.ld_k, m, n - p.num_q, p.out_type, acc[size_t(n)]);
          else store(p.v_out, p.ld_v, m, n - p.num_q - p.num_kv, p.out_type, acc[size_t(n)]);
        }
        break;
      case MatmulEpilogue::SiluMul:
        for (int f = 0; f < p.N / 2; ++f) {
          const float g = acc[size_t(gate_up_row(f, false))], u = acc[size_t(gate_up_row(f, true))];
          store(p.y, p.ldy, m, f, p.out_type, g / (1.0f + std::exp(-g)) * u);
        }
        break;
    }
  }
}

void interleave_gate_up(const bf16_bits* gate, const bf16_bits* up, int F, int K, int64_t ld, bf16_bits* out) {
  if (F < 8 || F % 8 != 0 || K < 1 || ld < K) fail("interleave_gate_up: F = ", F, " must be a multiple of 8, K = ", K, " >= 1, ld = ", ld, " >= K");
  for (int f = 0; f < F; ++f) {
    std::memcpy(out + int64_t(gate_up_row(f, false)) * K, gate + int64_t(f) * ld, size_t(K) * 2);
    std::memcpy(out + int64_t(gate_up_row(f, true)) * K, up + int64_t(f) * ld, size_t(K) * 2);
  }
}

}  // namespace flint::cpu
