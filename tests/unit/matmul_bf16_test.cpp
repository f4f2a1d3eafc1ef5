// The bf16 matmul's CPU twin (kernels/cpu/matmul_bf16.h) against fp64 on seeded random inputs with odd shapes,
// and its batch invariance: the GPU kernels are checked against this twin, so it must be right first.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/matmul_bf16.h"
#include "kernels/cpu/quant.h"

namespace flint::cpu {
namespace {

std::vector<bf16_bits> random_bf16(size_t n, uint32_t seed) {  // uniform in [-1, 1), never all zeros
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<bf16_bits> v(n);
  for (auto& b : v) b = f32_to_bf16(dist(rng));
  return v;
}

struct Reference {  // fp64 sums and the sum of |products|, which bounds the fp32 rounding error
  std::vector<double> sum, abs_sum;
};
Reference reference(const std::vector<bf16_bits>& x, int64_t ldx, const std::vector<bf16_bits>& w, int64_t ldw,
                    const bf16_bits* bias, int M, int N, int K) {
  Reference r{std::vector<double>(size_t(M) * N), std::vector<double>(size_t(M) * N)};
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = bias ? bf16_to_f32(bias[n]) : 0.0, a = std::fabs(s);
      for (int k = 0; k < K; ++k) {
        const double p = double(bf16_to_f32(x[size_t(m * ldx + k)])) * bf16_to_f32(w[size_t(n * ldw + k)]);
        s += p;
        a += std::fabs(p);
      }
      r.sum[size_t(m) * N + n] = s;
      r.abs_sum[size_t(m) * N + n] = a;
    }
  return r;
}

// fp32 accumulation of K products: |error| <= K · 2^-24 · Σ|products| (plus the split adds, covered by the
// factor 2); a bf16 output adds half an ulp, 2^-8 · |ref|.
double tolerance(double abs_sum, double ref, int K, bool bf16_out) {
  return 2.0 * (K + 2) * std::ldexp(abs_sum, -24) + 1e-30 + (bf16_out ? std::ldexp(std::fabs(ref), -8) : 0.0);
}

constexpr int kShapes[][3] = {  // M, N, K: odd sizes, one K split and unsplit, ragged last split
    {1, 1, 1}, {3, 17, 33}, {19, 99, 111}, {5, 1000, 999}, {2, 576, 1536}, {4, 16, 4096}, {7, 111, 500}};

TEST(MatmulBf16Twin, MatchesDoubleOnOddShapesInF32AndBf16) {
  for (const auto& s : kShapes) {
    const int M = s[0], N = s[1], K = s[2];
    const int64_t ldx = K + 3, ldw = K + 5;  // strided rows
    const auto x = random_bf16(size_t(M) * ldx, 11 + M), w = random_bf16(size_t(N) * ldw, 22 + N);
    const auto bias = random_bf16(size_t(N), 33);
    for (bool with_bias : {false, true}) {
      const Reference ref = reference(x, ldx, w, ldw, with_bias ? bias.data() : nullptr, M, N, K);
      for (MatmulOut out : {MatmulOut::F32, MatmulOut::BF16}) {
        std::vector<float> y32(size_t(M) * N, NAN);
        std::vector<bf16_bits> y16(size_t(M) * N, 0x7FC0);  // NaN
        MatmulParams p;
        p.M = M, p.N = N, p.K = K, p.x = x.data(), p.ldx = ldx, p.w = w.data(), p.ldw = ldw;
        p.maybe_bias = with_bias ? bias.data() : nullptr;
        p.out_type = out;
        p.y = out == MatmulOut::F32 ? static_cast<void*>(y32.data()) : static_cast<void*>(y16.data());
        p.ldy = N;
        matmul_bf16(p);
        for (size_t i = 0; i < y32.size(); ++i) {
          const double got = out == MatmulOut::F32 ? y32[i] : bf16_to_f32(y16[i]);
          ASSERT_TRUE(std::isfinite(got)) << M << "x" << N << "x" << K << " element " << i;
          ASSERT_LE(std::fabs(got - ref.sum[i]), tolerance(ref.abs_sum[i], ref.sum[i], K, out == MatmulOut::BF16))
              << M << "x" << N << "x" << K << " element " << i << " bias " << with_bias;
        }
      }
    }
  }
}

TEST(MatmulBf16Twin, OneHotRowSelectsAWeightColumnExactly) {
  const int N = 37, K = 300;  // K split in two for N = 37? whatever the split, one nonzero product is exact
  const auto w = random_bf16(size_t(N) * K, 5);
  std::vector<bf16_bits> x(size_t(2) * K, 0);
  x[123] = f32_to_bf16(1.0f);          // row 0: e_123
  x[K + 299] = f32_to_bf16(-2.0f);     // row 1: -2 e_299
  std::vector<float> y(size_t(2) * N, NAN);
  MatmulParams p;
  p.M = 2, p.N = N, p.K = K, p.x = x.data(), p.ldx = K, p.w = w.data(), p.ldw = K;
  p.out_type = MatmulOut::F32, p.y = y.data(), p.ldy = N;
  matmul_bf16(p);
  for (int n = 0; n < N; ++n) {
    EXPECT_EQ(y[size_t(n)], bf16_to_f32(w[size_t(n) * K + 123])) << n;
    EXPECT_EQ(y[size_t(N + n)], -2.0f * bf16_to_f32(w[size_t(n) * K + 299])) << n;
  }
}

TEST(MatmulBf16Twin, RowResultDoesNotDependOnM) {
  const int N = 300, K = 4864, M = 17;  // K split several ways
  ASSERT_GT(matmul_num_splits(N, K), 1);
  const auto x = random_bf16(size_t(M) * K, 7), w = random_bf16(size_t(N) * K, 8);
  auto run = [&](int m0, int rows) {
    std::vector<float> y(size_t(rows) * N, NAN);
    MatmulParams p;
    p.M = rows, p.N = N, p.K = K, p.x = x.data() + size_t(m0) * K, p.ldx = K, p.w = w.data(), p.ldw = K;
    p.out_type = MatmulOut::F32, p.y = y.data(), p.ldy = N;
    matmul_bf16(p);
    return y;
  };
  const auto all = run(0, M);
  for (int m : {0, 5, 16}) {
    const auto one = run(m, 1);
    EXPECT_EQ(std::memcmp(one.data(), all.data() + size_t(m) * N, size_t(N) * sizeof(float)), 0) << "row " << m;
  }
}

TEST(MatmulBf16Twin, QkvSplitsColumnsAndSiluMulFusesGateAndUp) {
  const int M = 3, K = 200, num_q = 24, num_kv = 8, N = num_q + 2 * num_kv;
  const auto x = random_bf16(size_t(M) * K, 1), w = random_bf16(size_t(N) * K, 2), bias = random_bf16(size_t(N), 3);
  // Qkv: the three outputs are the plain product's column ranges, bit for bit.
  std::vector<float> y(size_t(M) * N, NAN), q(size_t(M) * num_q, NAN), k(size_t(M) * num_kv, NAN),
      v(size_t(M) * num_kv, NAN);
  MatmulParams p;
  p.M = M, p.N = N, p.K = K, p.x = x.data(), p.ldx = K, p.w = w.data(), p.ldw = K, p.maybe_bias = bias.data();
  p.out_type = MatmulOut::F32, p.y = y.data(), p.ldy = N;
  matmul_bf16(p);
  MatmulParams f = p;
  f.epilogue = MatmulEpilogue::Qkv, f.y = q.data(), f.ldy = num_q, f.num_q = num_q, f.num_kv = num_kv;
  f.k_out = k.data(), f.ld_k = num_kv, f.v_out = v.data(), f.ld_v = num_kv;
  matmul_bf16(f);
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < num_q; ++n) EXPECT_EQ(q[size_t(m * num_q + n)], y[size_t(m * N + n)]);
    for (int n = 0; n < num_kv; ++n) {
      EXPECT_EQ(k[size_t(m * num_kv + n)], y[size_t(m * N + num_q + n)]);
      EXPECT_EQ(v[size_t(m * num_kv + n)], y[size_t(m * N + num_q + num_kv + n)]);
    }
  }
  // SiluMul: gate and up interleaved, against fp64 silu(gate) * up.
  const int F = 24;
  const auto gate = random_bf16(size_t(F) * K, 4), up = random_bf16(size_t(F) * K, 5);
  std::vector<bf16_bits> gu(size_t(2 * F) * K);
  interleave_gate_up(gate.data(), up.data(), F, K, K, gu.data());
  std::vector<float> h(size_t(M) * F, NAN);
  MatmulParams s;
  s.M = M, s.N = 2 * F, s.K = K, s.x = x.data(), s.ldx = K, s.w = gu.data(), s.ldw = K;
  s.epilogue = MatmulEpilogue::SiluMul, s.out_type = MatmulOut::F32, s.y = h.data(), s.ldy = F;
  matmul_bf16(s);
  const Reference g = reference(x, K, gate, K, nullptr, M, F, K), u = reference(x, K, up, K, nullptr, M, F, K);
  for (size_t i = 0; i < h.size(); ++i) {
    const double want = g.sum[i] / (1.0 + std::exp(-g.sum[i])) * u.sum[i];
    // silu's slope is at most 1.1: the accumulation errors of gate and up carry over, plus expf's few ulps.
    const double silu = g.sum[i] / (1.0 + std::exp(-g.sum[i]));
    const double tol = 1.1 * tolerance(g.abs_sum[i], 0, K, false) * std::fabs(u.sum[i]) +
                       std::fabs(silu) * tolerance(u.abs_sum[i], 0, K, false) + 1e-6 * std::fabs(want);
    ASSERT_NEAR(h[i], want, tol) << i;
  }
}

TEST(MatmulBf16Twin, RejectsBadParamsNamingTheField) {
  std::vector<bf16_bits> x(64, 0x3F80), w(64, 0x3F80);
  std::vector<float> y(64);
  MatmulParams p;
  p.M = 2, p.N = 2, p.K = 8, p.x = x.data(), p.ldx = 4, p.w = w.data(), p.ldw = 8;
  p.out_type = MatmulOut::F32, p.y = y.data(), p.ldy = 2;
  try {
    matmul_bf16(p);
    FAIL() << "ldx < K accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ldx"), std::string::npos) << e.what();
  }
  p.ldx = 8, p.epilogue = MatmulEpilogue::SiluMul;
  EXPECT_THROW(matmul_bf16(p), Error);  // N = 2 is not a multiple of 16
  EXPECT_NE(matmul_params_error(p).find("multiple of 16"), std::string::npos);
}

}  // namespace
}  // namespace flint::cpu
