// CPU ops against naive double-precision references on seeded random inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant.h"

namespace flint::cpu {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// |got - want| <= atol + rtol * |want|, every element, NaN never passes.
void expect_close(const std::vector<float>& got, const std::vector<double>& want, double atol, double rtol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "element " << i;
    ASSERT_LE(std::fabs(got[i] - want[i]), atol + rtol * std::fabs(want[i])) << "element " << i;
  }
}

TEST(CpuOps, DotMatchesDoubleOnOddLengths) {
  for (int64_t n : {1, 7, 8, 31, 33, 111, 500, 4096}) {
    auto a = random_vec(size_t(n), 1), b = random_vec(size_t(n), 2);
    double want = 0;
    for (int64_t i = 0; i < n; ++i) want += double(a[size_t(i)]) * b[size_t(i)];
    EXPECT_NEAR(dot_f32(a.data(), b.data(), n), want, 1e-5 * std::sqrt(double(n)) + 1e-6) << n;
  }
}

TEST(CpuOps, RmsNormMatchesFormula) {
  const int64_t n = 19, d = 111;
  auto x = random_vec(size_t(n * d), 3), w = random_vec(size_t(d), 4);
  std::vector<float> out(x.size(), NAN);
  ThreadPool pool(2);
  rms_norm(x.data(), w.data(), out.data(), n, d, 1e-5f, &pool);
  std::vector<double> want(x.size());
  for (int64_t r = 0; r < n; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(x[size_t(r * d + i)]) * x[size_t(r * d + i)];
    double inv = 1.0 / std::sqrt(ss / d + 1e-5);
    for (int64_t i = 0; i < d; ++i) want[size_t(r * d + i)] = x[size_t(r * d + i)] * inv * w[size_t(i)];
  }
  expect_close(out, want, 1e-5, 1e-5);
}

TEST(CpuOps, SiluMulMatchesFormula) {
  auto g = random_vec(99, 5, 3.0f), u = random_vec(99, 6);
  std::vector<float> out(99, NAN);
  silu_mul(g.data(), u.data(), out.data(), 9, 11);
  std::vector<double> want(99);
  for (size_t i = 0; i < 99; ++i) want[i] = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
  expect_close(out, want, 1e-6, 1e-5);
}

TEST(CpuOps, MatmulF32AndBf16MatchDoubleReference) {
  const int64_t N = 37, K = 111, M = 5;
  auto w = random_vec(size_t(N * K), 7), x = random_vec(size_t(M * K), 8);
  std::vector<uint16_t> wb(w.size());
  for (size_t i = 0; i < w.size(); ++i) wb[i] = f32_to_bf16(w[i]);
  ThreadPool pool(2);
  for (DType t : {DType::F32, DType::BF16}) {
    std::vector<float> y(static_cast<size_t>(M * N), NAN);
    const void* data = t == DType::F32 ? static_cast<const void*>(w.data()) : wb.data();
    uint64_t row_bytes = uint64_t(K) * (t == DType::F32 ? 4 : 2);
    matmul(t, data, row_bytes, N, K, x.data(), M, y.data(), &pool);
    std::vector<double> want(y.size());
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) {
          double wv = t == DType::F32 ? w[size_t(n * K + k)] : bf16_to_f32(wb[size_t(n * K + k)]);
          s += wv * x[size_t(m * K + k)];
        }
        want[size_t(m * N + n)] = s;
      }
    expect_close(y, want, 1e-4, 1e-5);
  }
}

TEST(CpuOps, MatmulRowDoesNotDependOnBatchSize) {
  const int64_t N = 64, K = 576;
  auto w = random_vec(size_t(N * K), 9), x = random_vec(size_t(8 * K), 10);
  ThreadPool pool(2);
  std::vector<float> alone(static_cast<size_t>(N)), batched(static_cast<size_t>(8 * N));
  matmul(DType::F32, w.data(), uint64_t(K) * 4, N, K, x.data() + 3 * K, 1, alone.data(), &pool);
  matmul(DType::F32, w.data(), uint64_t(K) * 4, N, K, x.data(), 8, batched.data(), &pool);
  for (int64_t n = 0; n < N; ++n) EXPECT_EQ(alone[size_t(n)], batched[size_t(3 * N + n)]);
}

// Random quantized rows: fp16 scales, random nibbles / int8s, built through
// dequantize_row's own layout so the reference needs no quantizer.
std::vector<uint8_t> random_quant_rows(DType t, int64_t N, int64_t K, uint32_t seed) {
  const auto info = dtype_info(t);
  std::vector<uint8_t> bytes(size_t(N * K / info.block_size * info.block_bytes));
  std::mt19937 rng(seed);
  for (auto& b : bytes) b = uint8_t(rng());
  // Overwrite every fp16 scale with a sane value (random bits may be NaN/Inf).
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  for (size_t off = 0; off < bytes.size(); off += size_t(info.block_bytes)) {
    int num_halves = t == DType::Q4_1 ? 2 : 1;
    for (int h = 0; h < num_halves; ++h) {
      uint16_t v = f32_to_f16(scale(rng));
      std::memcpy(&bytes[off + size_t(2 * h)], &v, 2);
    }
  }
  return bytes;
}

TEST(CpuOps, QuantizedMatmulMatchesDequantizedReferenceAndIsBatchInvariant) {
  const int64_t N = 29, K = 576;
  ThreadPool pool(2);
  for (DType t : {DType::Q4_1, DType::Q4_0, DType::Q8_0, DType::F16}) {
    std::vector<uint8_t> w;
    if (t == DType::F16) {
      auto f = random_vec(size_t(N * K), 60);
      w.resize(f.size() * 2);
      for (size_t i = 0; i < f.size(); ++i) {
        uint16_t h = f32_to_f16(f[i]);
        std::memcpy(&w[2 * i], &h, 2);
      }
    } else {
      w = random_quant_rows(t, N, K, 61);
    }
    const uint64_t row_bytes = w.size() / size_t(N);
    const int64_t M = 7;
    auto x = random_vec(size_t(M * K), 62);
    std::vector<float> y(size_t(M * N), NAN);
    matmul(t, w.data(), row_bytes, N, K, x.data(), M, y.data(), &pool);
    std::vector<double> want(y.size());
    std::vector<float> row(static_cast<size_t>(K));
    for (int64_t n = 0; n < N; ++n) {
      dequantize_row(t, w.data() + uint64_t(n) * row_bytes, row.data(), K);
      for (int64_t m = 0; m < M; ++m) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += double(row[size_t(k)]) * x[size_t(m * K + k)];
        want[size_t(m * N + n)] = s;
      }
    }
    expect_close(y, want, 1e-4, 1e-4);
    // Every M from 1 to 7 gives each row the same bits.
    for (int64_t mm = 1; mm < M; ++mm) {
      std::vector<float> part(size_t(mm * N), NAN);
      matmul(t, w.data(), row_bytes, N, K, x.data() + (M - mm) * K, mm, part.data(), &pool);
      for (int64_t i = 0; i < mm * N; ++i) ASSERT_EQ(part[size_t(i)], y[size_t((M - mm) * N + i)]) << dtype_info(t).name << " M=" << mm;
    }
  }
}

TEST(CpuOps, MatmulMultiEqualsSeparateMatmuls) {
  const int64_t K = 64, M = 4;
  auto w0 = random_vec(size_t(10 * K), 70), w1 = random_vec(size_t(3 * K), 71), x = random_vec(size_t(M * K), 72);
  ThreadPool pool(2);
  std::vector<float> y0(size_t(M * 10)), y1(size_t(M * 3)), s0(y0.size()), s1(y1.size());
  MatmulOutput outs[2] = {{DType::F32, w0.data(), uint64_t(K) * 4, 10, y0.data()},
                          {DType::F32, w1.data(), uint64_t(K) * 4, 3, y1.data()}};
  matmul_multi(outs, 2, K, x.data(), M, &pool);
  matmul(DType::F32, w0.data(), uint64_t(K) * 4, 10, K, x.data(), M, s0.data());
  matmul(DType::F32, w1.data(), uint64_t(K) * 4, 3, K, x.data(), M, s1.data());
  EXPECT_EQ(y0, s0);
  EXPECT_EQ(y1, s1);
}

TEST(CpuOps, RopeHalvesRotatesPairsByPositionTimesFrequency) {
  RopeParams p;
  p.head_dim = 64;
  p.theta = 10000.0f;
  std::vector<float> inv(32);
  rope_inv_freq(p, inv.data());
  auto x = random_vec(3 * 2 * 64, 11);
  auto orig = x;
  std::vector<int32_t> pos = {0, 5, 1000};
  rope(x.data(), pos.data(), 3, 2, p, inv.data());
  for (int t = 0; t < 3; ++t)
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 32; ++i) {
        double ang = double(pos[size_t(t)]) * (1.0 / std::pow(10000.0, 2.0 * i / 64));
        size_t base = size_t((t * 2 + h) * 64);
        double x0 = orig[base + size_t(i)], x1 = orig[base + size_t(i) + 32];
        EXPECT_NEAR(x[base + size_t(i)], x0 * std::cos(ang) - x1 * std::sin(ang), 2e-3);
        EXPECT_NEAR(x[base + size_t(i) + 32], x1 * std::cos(ang) + x0 * std::sin(ang), 2e-3);
      }
}

TEST(CpuOps, RopeInterleavedEqualsHalvesOnPermutedDims) {
  // llama.cpp's converter permutes Q/K rows so that adjacent pairs (2i, 2i+1)
  // hold what HF rotates as (i, i + hd/2): both styles must then agree.
  RopeParams halves, inter;
  halves.head_dim = inter.head_dim = 16;
  halves.theta = inter.theta = 500000.0f;
  inter.style = RopeStyle::Interleaved;
  std::vector<float> inv(8);
  rope_inv_freq(halves, inv.data());
  auto x = random_vec(16, 12);
  std::vector<float> y(16);
  for (int i = 0; i < 8; ++i) {
    y[size_t(2 * i)] = x[size_t(i)];
    y[size_t(2 * i + 1)] = x[size_t(i + 8)];
  }
  int32_t pos = 77;
  rope(x.data(), &pos, 1, 1, halves, inv.data());
  rope(y.data(), &pos, 1, 1, inter, inv.data());
  for (int i = 0; i < 8; ++i) {
    EXPECT_FLOAT_EQ(y[size_t(2 * i)], x[size_t(i)]);
    EXPECT_FLOAT_EQ(y[size_t(2 * i + 1)], x[size_t(i + 8)]);
  }
}

TEST(CpuOps, Llama3RopeScalingKeepsHighFrequenciesAndSlowsLowOnes) {
  RopeParams p;
  p.head_dim = 64;
  p.theta = 500000.0f;
  RopeParams scaled = p;
  scaled.scaling_factor = 32.0f;
  std::vector<float> a(32), b(32);
  rope_inv_freq(p, a.data());
  rope_inv_freq(scaled, b.data());
  EXPECT_FLOAT_EQ(b[0], a[0]);               // shortest wavelength untouched
  EXPECT_FLOAT_EQ(b[31], a[31] / 32.0f);     // longest divided by the factor
}

// Dense causal GQA attention in double: the reference for the paged kernel.
std::vector<double> dense_attention(const std::vector<float>& q, const std::vector<float>& k,
                                    const std::vector<float>& v, int nq, int nkv, int hd, int len,
                                    int first_query_pos) {
  const int nqt = len - first_query_pos;
  std::vector<double> out(static_cast<size_t>(nqt * nq * hd));
  for (int t = 0; t < nqt; ++t)
    for (int h = 0; h < nq; ++h) {
      int kvh = h / (nq / nkv), p = first_query_pos + t;
      std::vector<double> s(static_cast<size_t>(p + 1));
      double mx = -1e300, sum = 0;
      for (int j = 0; j <= p; ++j) {
        double d = 0;
        for (int i = 0; i < hd; ++i) d += double(q[size_t((t * nq + h) * hd + i)]) * k[size_t((j * nkv + kvh) * hd + i)];
        s[size_t(j)] = d / std::sqrt(double(hd));
        mx = std::max(mx, s[size_t(j)]);
      }
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (int i = 0; i < hd; ++i) {
        double acc = 0;
        for (int j = 0; j <= p; ++j) acc += s[size_t(j)] * v[size_t((j * nkv + kvh) * hd + i)];
        out[size_t((t * nq + h) * hd + i)] = acc / sum;
      }
    }
  return out;
}

struct PagedFixture {
  std::vector<float> kc, vc;
  PagedKv cache;
  std::vector<int32_t> cu, kv_lens, table, positions;
  AttentionBatch batch;
};

TEST(CpuAttention, PagedMatchesDenseAcrossGqaRatiosAndBlockBoundaries) {
  ThreadPool pool(2);
  for (int ratio : {1, 3, 4}) {
    for (int len : {1, 15, 16, 17, 100}) {
      const int nkv = 2, nq = nkv * ratio, hd = 64, bs = 16, nblocks = 16;
      auto q = random_vec(size_t(len * nq * hd), 20), k = random_vec(size_t(len * nkv * hd), 21),
           v = random_vec(size_t(len * nkv * hd), 22);
      PagedFixture f;
      f.kc.assign(size_t(nblocks * bs * nkv * hd), NAN);
      f.vc.assign(f.kc.size(), NAN);
      f.cache = {f.kc.data(), f.vc.data(), nblocks, bs, nkv, hd};
      // Blocks out of order, so the table is really followed.
      f.table = {9, 3, 14, 0, 7, 1, 2, 4};
      f.cu = {0, len};
      f.kv_lens = {len};
      f.positions.resize(size_t(len));
      std::iota(f.positions.begin(), f.positions.end(), 0);
      f.batch = {f.cu.data(), f.kv_lens.data(), f.table.data(), 8, f.positions.data(), 1, len};
      write_kv(f.cache, f.batch, k.data(), v.data());
      std::vector<float> out(q.size(), NAN);
      paged_attention(f.cache, f.batch, q.data(), nq, 1.0f / 8.0f, out.data(), &pool);
      expect_close(out, dense_attention(q, k, v, nq, nkv, hd, len, 0), 1e-5, 1e-4);
    }
  }
}

TEST(CpuAttention, OneHotSoftmaxReturnsThatValueRow) {
  // q is a large multiple of key 5, every other key orthogonal: output = v[5].
  const int hd = 8, len = 9, bs = 4;
  std::vector<float> k(static_cast<size_t>(len * hd), 0.0f), v = random_vec(size_t(len * hd), 30);
  for (int j = 0; j < len; ++j) k[size_t(j * hd + (j % hd))] = 1.0f;
  std::vector<float> q(static_cast<size_t>(hd), 0.0f);
  q[5] = 1000.0f;
  std::vector<float> kc(static_cast<size_t>(4 * bs * hd)), vc(kc.size());
  PagedKv cache{kc.data(), vc.data(), 4, bs, 1, hd};
  std::vector<int32_t> table = {2, 0, 3}, cu = {0, len}, kv_lens = {len}, pos(static_cast<size_t>(len));
  std::iota(pos.begin(), pos.end(), 0);
  AttentionBatch all{cu.data(), kv_lens.data(), table.data(), 3, pos.data(), 1, len};
  write_kv(cache, all, k.data(), v.data());
  // One query token at the last position.
  std::vector<int32_t> cu1 = {0, 1}, pos1 = {len - 1};
  AttentionBatch one{cu1.data(), kv_lens.data(), table.data(), 3, pos1.data(), 1, 1};
  std::vector<float> out(static_cast<size_t>(hd), NAN);
  paged_attention(cache, one, q.data(), 1, 1.0f, out.data());
  for (int i = 0; i < hd; ++i) EXPECT_NEAR(out[size_t(i)], v[size_t(5 * hd + i)], 1e-6);
}

TEST(CpuAttention, CachedPrefixPlusNewChunkMatchesDense) {
  // 40 tokens already cached, 13 new ones as a chunk (prefix caching / chunked prefill).
  const int nq = 4, nkv = 1, hd = 64, bs = 16, len = 53, first = 40;
  auto q = random_vec(size_t(len * nq * hd), 40), k = random_vec(size_t(len * nkv * hd), 41),
       v = random_vec(size_t(len * nkv * hd), 42);
  std::vector<float> kc(static_cast<size_t>(8 * bs * nkv * hd)), vc(kc.size());
  PagedKv cache{kc.data(), vc.data(), 8, bs, nkv, hd};
  std::vector<int32_t> table = {5, 1, 7, 2}, cu = {0, first}, kv0 = {first}, pos(static_cast<size_t>(len));
  std::iota(pos.begin(), pos.end(), 0);
  AttentionBatch prefix{cu.data(), kv0.data(), table.data(), 4, pos.data(), 1, first};
  write_kv(cache, prefix, k.data(), v.data());
  std::vector<int32_t> cu2 = {0, len - first}, kv2 = {len};
  AttentionBatch chunk{cu2.data(), kv2.data(), table.data(), 4, pos.data() + first, 1, len - first};
  write_kv(cache, chunk, k.data() + first * nkv * hd, v.data() + first * nkv * hd);
  std::vector<float> out(static_cast<size_t>((len - first) * nq * hd), NAN);
  std::vector<float> qc(q.begin() + first * nq * hd, q.end());
  paged_attention(cache, chunk, qc.data(), nq, 0.125f, out.data());
  expect_close(out, dense_attention(qc, k, v, nq, nkv, hd, len, first), 1e-5, 1e-4);
}

TEST(CpuOps, SoftmaxSumsToOneAndReturnsLogSumExp) {
  auto l = random_vec(1000, 50, 5.0f);
  std::vector<float> p(1000);
  float lse = softmax(l.data(), p.data(), 1000);
  double sum = 0, want = 0;
  for (float x : p) sum += x;
  for (float x : l) want += std::exp(double(x));
  EXPECT_NEAR(sum, 1.0, 1e-5);
  EXPECT_NEAR(lse, std::log(want), 1e-4);
}

}  // namespace
}  // namespace flint::cpu
