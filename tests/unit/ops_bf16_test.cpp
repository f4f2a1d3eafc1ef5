// The CPU twins of the small CUDA ops (kernels/cpu/ops_bf16.h) against straightforward fp32/fp64 references on
// seeded random inputs with odd sizes, one case known by construction each, and their argument checks. The GPU
// tests compare the kernels with these twins, so the twins must be right first.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/ops_bf16.h"
#include "kernels/cpu/quant.h"
#include "test_util.h"

namespace flint::cpu {
namespace {

using test::expect_error;

std::vector<bf16_bits> random_bf16(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<bf16_bits> v(n);
  for (auto& b : v) b = f32_to_bf16(dist(rng));
  return v;
}
std::vector<float> random_f32(size_t n, uint32_t seed, float lo = -2.0f, float hi = 2.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& f : v) f = dist(rng);
  return v;
}

// ---- embedding -----------------------------------------------------------------------------------------------

TEST(OpsTwin, EmbeddingCopiesTableRowsAndZeroesOutOfRangeIds) {
  const int vocab = 99, hidden = 111, ld_table = 120, ld_out = 115;
  const auto table = random_bf16(size_t(vocab) * ld_table, 1);
  const std::vector<int32_t> ids = {0, 98, 17, -1, 99, 5, 1 << 30, 17};
  for (ActType type : {ActType::F32, ActType::BF16}) {
    std::vector<float> out_f(ids.size() * ld_out, NAN);
    std::vector<bf16_bits> out_b(ids.size() * ld_out, 0x7FC1);
    EmbeddingParams p;
    p.num_tokens = int(ids.size()), p.ids = ids.data(), p.vocab = vocab, p.hidden = hidden;
    p.table = table.data(), p.ld_table = ld_table, p.out_type = type, p.ld_out = ld_out;
    p.out = type == ActType::F32 ? static_cast<void*>(out_f.data()) : out_b.data();
    embedding_bf16(p);
    for (size_t t = 0; t < ids.size(); ++t) {
      const bool valid = ids[t] >= 0 && ids[t] < vocab;
      for (int i = 0; i < ld_out; ++i) {
        const size_t o = t * ld_out + size_t(i);
        if (i >= hidden) {  // padding untouched
          if (type == ActType::F32) EXPECT_TRUE(std::isnan(out_f[o]));
          else EXPECT_EQ(out_b[o], 0x7FC1);
          continue;
        }
        const bf16_bits want = valid ? table[size_t(ids[t]) * ld_table + size_t(i)] : bf16_bits(0);
        if (type == ActType::F32) ASSERT_EQ(out_f[o], bf16_to_f32(want)) << t << " " << i;
        else ASSERT_EQ(out_b[o], want) << t << " " << i;
      }
    }
  }
}

TEST(OpsTwin, EmbeddingRejectsBadArguments) {
  std::vector<bf16_bits> table(64);
  std::vector<float> out(64);
  int32_t id = 0;
  EmbeddingParams p;
  p.num_tokens = 1, p.ids = &id, p.vocab = 8, p.hidden = 8, p.table = table.data(), p.ld_table = 8;
  p.out = out.data(), p.ld_out = 8;
  embedding_bf16(p);
  auto bad = p;
  bad.hidden = 0;
  expect_error([&] { embedding_bf16(bad); }, {"embedding", "hidden = 0"});
  bad = p, bad.ld_out = 7;
  expect_error([&] { embedding_bf16(bad); }, {"ld_out = 7", "less than hidden"});
  bad = p, bad.ld_table = 4;
  expect_error([&] { embedding_bf16(bad); }, {"ld_table = 4"});
  bad = p, bad.table = nullptr;
  expect_error([&] { embedding_bf16(bad); }, {"must not be null"});
  bad = p, bad.num_tokens = -1;
  expect_error([&] { embedding_bf16(bad); }, {"num_tokens = -1"});
}

// ---- add + RMSNorm ---------------------------------------------------------------------------------------------

// Tolerance on out: the fp64 value rounded to bf16 (2^-9 relative) plus the fp32 error of the sum of squares and
// of x · inv · w (a few 2^-24 relative): |out - ref| <= 2^-8 · |ref| + 2^-20.
// splits: 0 no delta; 1 one delta; S > 1 the delta as S slices (a matmul's split-K partial sums), added in order.
void check_add_rmsnorm(int rows, int hidden, int splits, uint32_t seed) {
  SCOPED_TRACE("rows " + std::to_string(rows) + " hidden " + std::to_string(hidden) + " delta splits " +
               std::to_string(splits));
  const bool with_delta = splits > 0;
  const int ldx = hidden + 3, ld_delta = hidden + 5, ld_out = hidden + 1;
  const int64_t ld_split = int64_t(rows) * ld_delta + 7;
  auto x = random_f32(size_t(rows) * ldx, seed);
  const auto x0 = x;
  const auto delta = random_f32(size_t(std::max(splits, 1)) * size_t(ld_split), seed + 1);
  const auto w = random_bf16(size_t(hidden), seed + 2, 0.5f, 1.5f);
  std::vector<bf16_bits> out(size_t(rows) * ld_out, 0x7FC1);
  AddRmsNormParams p;
  p.num_rows = rows, p.hidden = hidden, p.x = x.data(), p.ldx = ldx;
  p.maybe_delta = with_delta ? delta.data() : nullptr, p.ld_delta = ld_delta;
  p.delta_splits = std::max(splits, 1), p.ld_split = ld_split;
  p.w = w.data(), p.out = out.data(), p.ld_out = ld_out, p.eps = 1e-5f;
  add_rmsnorm(p);
  for (int r = 0; r < rows; ++r) {
    std::vector<double> xr(static_cast<size_t>(hidden));
    double ss = 0.0;
    for (int i = 0; i < hidden; ++i) {
      const size_t k = size_t(r) * ldx + size_t(i);
      float d = delta[size_t(r) * ld_delta + size_t(i)];  // split 0, then += split 1, 2, ...
      for (int s = 1; s < splits; ++s) d += delta[size_t(s) * size_t(ld_split) + size_t(r) * ld_delta + size_t(i)];
      const float want_x = with_delta ? x0[k] + d : x0[k];
      ASSERT_EQ(x[k], want_x) << "x[" << r << ", " << i << "]";  // fp32 additions in that order, or untouched
      xr[size_t(i)] = want_x;
      ss += double(want_x) * want_x;
    }
    for (int i = hidden; i < ldx; ++i) ASSERT_EQ(x[size_t(r) * ldx + size_t(i)], x0[size_t(r) * ldx + size_t(i)]);
    const double inv = 1.0 / std::sqrt(ss / hidden + 1e-5);
    for (int i = 0; i < hidden; ++i) {
      const double ref = xr[size_t(i)] * inv * double(bf16_to_f32(w[size_t(i)]));
      const double got = bf16_to_f32(out[size_t(r) * ld_out + size_t(i)]);
      ASSERT_LE(std::fabs(got - ref), 0x1p-8 * std::fabs(ref) + 0x1p-20) << "out[" << r << ", " << i << "] ref " << ref;
    }
    EXPECT_EQ(out[size_t(r) * ld_out + size_t(hidden)], 0x7FC1);  // padding untouched
  }
}

TEST(OpsTwin, AddRmsNormMatchesFp64OnOddShapes) {
  uint32_t seed = 10;
  for (int hidden : {1, 19, 111, 500, 4096, 8192})
    for (int rows : {1, 3, 19}) {
      check_add_rmsnorm(rows, hidden, 1, seed++);
      check_add_rmsnorm(rows, hidden, 0, seed++);
      check_add_rmsnorm(rows, hidden, 5, seed++);
    }
}

TEST(OpsTwin, RmsNormOfAConstantRowIsItsSign) {  // known by construction: x = c everywhere, w = 1 -> c / |c|
  const int hidden = 64;
  std::vector<float> x(2 * hidden);
  for (int i = 0; i < hidden; ++i) x[size_t(i)] = 3.0f, x[size_t(hidden + i)] = -0.25f;
  std::vector<bf16_bits> w(hidden, f32_to_bf16(1.0f)), out(2 * hidden);
  AddRmsNormParams p;
  p.num_rows = 2, p.hidden = hidden, p.x = x.data(), p.ldx = hidden, p.w = w.data(), p.out = out.data();
  p.ld_out = hidden, p.eps = 1e-9f;
  add_rmsnorm(p);
  for (int i = 0; i < hidden; ++i) {
    EXPECT_EQ(out[size_t(i)], f32_to_bf16(1.0f));
    EXPECT_EQ(out[size_t(hidden + i)], f32_to_bf16(-1.0f));
  }
}

TEST(OpsTwin, AddRmsNormRejectsBadArguments) {
  std::vector<float> x(16);
  std::vector<bf16_bits> w(16), out(16);
  AddRmsNormParams p;
  p.num_rows = 1, p.hidden = 16, p.x = x.data(), p.ldx = 16, p.w = w.data(), p.out = out.data(), p.ld_out = 16;
  auto bad = p;
  bad.eps = 0.0f;
  expect_error([&] { add_rmsnorm(bad); }, {"add_rmsnorm", "eps"});
  bad = p, bad.ldx = 8;
  expect_error([&] { add_rmsnorm(bad); }, {"ldx = 8"});
  bad = p, bad.maybe_delta = x.data(), bad.ld_delta = 3;
  expect_error([&] { add_rmsnorm(bad); }, {"ld_delta = 3"});
  bad = p, bad.maybe_delta = x.data(), bad.ld_delta = 16, bad.delta_splits = 0;
  expect_error([&] { add_rmsnorm(bad); }, {"delta_splits = 0"});
  bad = p, bad.maybe_delta = x.data(), bad.ld_delta = 16, bad.delta_splits = 2, bad.ld_split = 15;
  expect_error([&] { add_rmsnorm(bad); }, {"ld_split = 15", "slice"});
  bad = p, bad.hidden = 0;
  expect_error([&] { add_rmsnorm(bad); }, {"hidden = 0"});
  bad = p, bad.w = nullptr;
  expect_error([&] { add_rmsnorm(bad); }, {"must not be null"});
}

// ---- the final norm's gather (row ids) ---------------------------------------------------------------------------

// Out row i with row ids is the norm of x + delta row ids[i], bit for bit what the norm of a copy of that row gives;
// x is only read; an index outside [0, src_rows) gives a row of zeros; a repeated index, the same row twice.
TEST(OpsTwin, AddRmsNormWithRowIdsIsTheNormOfTheGatheredRowsBitForBit) {
  const int src_rows = 19, hidden = 37, ld = 40, ld_out = 38;
  const std::vector<int32_t> ids = {18, 0, 7, 7, -3, 19, 2};
  uint32_t seed = 50;
  for (int splits : {0, 1, 3}) {
    const int64_t ld_split = int64_t(src_rows) * ld;
    const auto x = random_f32(size_t(src_rows) * ld, seed++);
    const auto delta = random_f32(size_t(std::max(splits, 1)) * size_t(ld_split), seed++);
    const auto w = random_bf16(size_t(hidden), seed++, 0.5f, 1.5f);
    auto x_in = x;
    std::vector<bf16_bits> out(ids.size() * ld_out, 0x7FC1);
    AddRmsNormParams p;
    p.num_rows = int(ids.size()), p.hidden = hidden, p.maybe_row_ids = ids.data(), p.num_src_rows = src_rows;
    p.x = x_in.data(), p.ldx = ld, p.maybe_delta = splits ? delta.data() : nullptr, p.ld_delta = ld;
    p.delta_splits = std::max(splits, 1), p.ld_split = ld_split;
    p.w = w.data(), p.out = out.data(), p.ld_out = ld_out, p.eps = 1e-5f;
    add_rmsnorm(p);
    ASSERT_EQ(std::memcmp(x_in.data(), x.data(), x.size() * 4), 0) << "x written with row ids";
    for (size_t i = 0; i < ids.size(); ++i) {
      const bf16_bits* got = out.data() + i * ld_out;
      for (int c = hidden; c < ld_out; ++c) ASSERT_EQ(got[c], 0x7FC1) << "padding of row " << i;
      if (ids[i] < 0 || ids[i] >= src_rows) {
        for (int c = 0; c < hidden; ++c) ASSERT_EQ(got[c], 0) << "row " << i << " (index " << ids[i] << ")";
        continue;
      }
      // The row alone: its x and delta slices copied out, normed without row ids.
      std::vector<float> xr(x.begin() + ids[i] * ld, x.begin() + ids[i] * ld + hidden), dr;
      for (int s = 0; s < std::max(splits, 1); ++s)
        dr.insert(dr.end(), delta.begin() + s * ld_split + ids[i] * ld, delta.begin() + s * ld_split + ids[i] * ld + hidden);
      std::vector<bf16_bits> want(static_cast<size_t>(hidden));
      AddRmsNormParams one;
      one.num_rows = 1, one.hidden = hidden, one.x = xr.data(), one.ldx = hidden;
      one.maybe_delta = splits ? dr.data() : nullptr, one.ld_delta = hidden;
      one.delta_splits = std::max(splits, 1), one.ld_split = hidden;
      one.w = w.data(), one.out = want.data(), one.ld_out = hidden, one.eps = 1e-5f;
      add_rmsnorm(one);
      ASSERT_EQ(std::memcmp(got, want.data(), size_t(hidden) * 2), 0) << "row " << i << " splits " << splits;
    }
  }
}

TEST(OpsTwin, AddRmsNormWithRowIdsRejectsBadArguments) {
  std::vector<float> x(32);
  std::vector<bf16_bits> w(16), out(16);
  int32_t id = 1;
  AddRmsNormParams p;
  p.num_rows = 1, p.hidden = 16, p.x = x.data(), p.ldx = 16, p.w = w.data(), p.out = out.data(), p.ld_out = 16;
  p.maybe_row_ids = &id, p.num_src_rows = 2;
  add_rmsnorm(p);
  auto bad = p;
  bad.num_src_rows = -1;
  expect_error([&] { add_rmsnorm(bad); }, {"add_rmsnorm", "num_src_rows = -1"});
  bad = p, bad.maybe_delta = x.data(), bad.ld_delta = 16, bad.delta_splits = 2, bad.ld_split = 16;  // 2 rows a slice
  expect_error([&] { add_rmsnorm(bad); }, {"ld_split = 16", "slice"});
}

// ---- dequantisation --------------------------------------------------------------------------------------------

// Random bytes for n values of type t, with every fp16 scale a sane finite number (random bytes would make some
// scales inf or NaN, which real weights never have).
std::vector<uint8_t> random_weight(DType t, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto info = dtype_info(t);
  std::vector<uint8_t> bytes(*dtype_bytes(t, uint64_t(n)));
  for (auto& b : bytes) b = uint8_t(rng());
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f), value(-3.0f, 3.0f);
  auto put16 = [&](size_t off, uint16_t v) { std::memcpy(bytes.data() + off, &v, 2); };
  const size_t nb = size_t(n / info.block_size);
  for (size_t i = 0; i < nb; ++i) {
    const size_t b = i * size_t(info.block_bytes);
    switch (t) {
      case DType::Q8_0: case DType::Q4_0: put16(b, f32_to_f16(scale(rng))); break;
      case DType::Q4_1: put16(b, f32_to_f16(scale(rng))), put16(b + 2, f32_to_f16(scale(rng))); break;
      case DType::Q4_K: put16(b, f32_to_f16(scale(rng))), put16(b + 2, f32_to_f16(scale(rng))); break;
      case DType::Q6_K: put16(b + offsetof(BlockQ6_K, d), f32_to_f16(scale(rng))); break;
      case DType::F16: put16(b, f32_to_f16(value(rng))); break;
      case DType::BF16: put16(b, f32_to_bf16(value(rng))); break;
      case DType::F32: { const float f = value(rng); std::memcpy(bytes.data() + b, &f, 4); } break;
    }
  }
  return bytes;
}

// The formulas of quant.h's block comments, written out plainly, value by value.
std::vector<float> reference_dequant(DType t, const uint8_t* row, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  auto h = [](uint16_t v) { return f16_to_f32(v); };
  for (int64_t i = 0; i < n; ++i) {
    float v = 0.0f;
    switch (t) {
      case DType::F32: std::memcpy(&v, row + 4 * i, 4); break;
      case DType::F16: { uint16_t u; std::memcpy(&u, row + 2 * i, 2); v = h(u); } break;
      case DType::BF16: { uint16_t u; std::memcpy(&u, row + 2 * i, 2); v = bf16_to_f32(u); } break;
      case DType::Q8_0: { BlockQ8_0 b; std::memcpy(&b, row + 34 * (i / 32), 34); v = h(b.d) * float(b.qs[i % 32]); } break;
      case DType::Q4_0: {
        BlockQ4_0 b;
        std::memcpy(&b, row + 18 * (i / 32), 18);
        const int j = int(i % 32), q = j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4);
        v = float(q) * h(b.d) + -8.0f * h(b.d);  // d·(q - 8), with +0 (not -0) at q = 8 for every d
      } break;
      case DType::Q4_1: {
        BlockQ4_1 b;
        std::memcpy(&b, row + 20 * (i / 32), 20);
        const int j = int(i % 32), q = j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4);
        v = h(b.d) * float(q) + h(b.m);
      } break;
      case DType::Q4_K: {
        BlockQ4_K b;
        std::memcpy(&b, row + 144 * (i / 256), 144);
        const int j = int(i % 256), c = j / 64, s = 2 * c + (j % 64) / 32, l = j % 32;
        uint8_t sc, mn;
        q4_k_scale_min(b.scales, s, &sc, &mn);
        const int q = (s % 2) ? (b.qs[32 * c + l] >> 4) : (b.qs[32 * c + l] & 15);
        v = (h(b.d) * float(sc)) * float(q) - h(b.dmin) * float(mn);
      } break;
      case DType::Q6_K: {
        BlockQ6_K b;
        std::memcpy(&b, row + 210 * (i / 256), 210);
        const int j = int(i % 256), half = j / 128, k = (j % 128) / 32, l = j % 32;
        const uint8_t* L = b.ql + 64 * half + (k % 2) * 32;
        const int low = k < 2 ? (L[l] & 15) : (L[l] >> 4);
        const int q = (low | (((b.qh[32 * half + l] >> (2 * k)) & 3) << 4)) - 32;
        v = (h(b.d) * float(b.scales[8 * half + l / 16 + 2 * k])) * float(q);
      } break;
    }
    y[size_t(i)] = v;
  }
  return y;
}

TEST(OpsTwin, DequantizeBf16IsTheRoundedCpuDequantizationForEveryType) {
  uint32_t seed = 100;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K}) {
    SCOPED_TRACE(std::string(dtype_info(t).name));
    const int64_t row_elems = dtype_info(t).block_size == 256 ? 768 : 96, rows = 7, ld_dst = row_elems + 8;
    const uint64_t row_bytes = *dtype_bytes(t, uint64_t(row_elems)) + 4;  // padded rows
    std::vector<uint8_t> src(size_t(rows) * row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      const auto w = random_weight(t, row_elems, seed++);
      std::memcpy(src.data() + size_t(r) * row_bytes, w.data(), w.size());
    }
    std::vector<bf16_bits> dst(size_t(rows) * ld_dst, 0x7FC1);
    DequantParams p;
    p.type = t, p.num_rows = rows, p.row_elems = row_elems, p.src = src.data(), p.src_row_bytes = row_bytes;
    p.dst = dst.data(), p.ld_dst = ld_dst;
    dequantize_bf16(p);
    std::vector<float> cpu(static_cast<size_t>(row_elems));
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = src.data() + size_t(r) * row_bytes;
      dequantize_row(t, row, cpu.data(), row_elems);
      const auto ref = reference_dequant(t, row, row_elems);
      for (int64_t i = 0; i < row_elems; ++i) {
        // The plain formula and this build's dequantize_row (AVX2 here) give the same float, bit for bit: what
        // the GPU kernel, doing the plain formula, relies on.
        ASSERT_EQ(std::bit_cast<uint32_t>(cpu[size_t(i)]), std::bit_cast<uint32_t>(ref[size_t(i)])) << r << " " << i;
        ASSERT_EQ(dst[size_t(r * ld_dst + i)], f32_to_bf16(ref[size_t(i)])) << r << " " << i;
      }
      for (int64_t i = row_elems; i < ld_dst; ++i) ASSERT_EQ(dst[size_t(r * ld_dst + i)], 0x7FC1);
    }
  }
}

TEST(OpsTwin, DequantizeRejectsBadArguments) {
  std::vector<uint8_t> src(1024);
  std::vector<bf16_bits> dst(512);
  DequantParams p;
  p.type = DType::Q4_0, p.num_rows = 1, p.row_elems = 64, p.src = src.data(), p.src_row_bytes = 36;
  p.dst = dst.data(), p.ld_dst = 64;
  dequantize_bf16(p);
  auto bad = p;
  bad.row_elems = 48;
  expect_error([&] { dequantize_bf16(bad); }, {"dequant", "row_elems = 48", "Q4_0", "32"});
  bad = p, bad.src_row_bytes = 30;
  expect_error([&] { dequantize_bf16(bad); }, {"src_row_bytes = 30", "36 bytes"});
  bad = p, bad.ld_dst = 63;
  expect_error([&] { dequantize_bf16(bad); }, {"ld_dst = 63"});
  bad = p, bad.type = DType(42);
  expect_error([&] { dequantize_bf16(bad); }, {"type = 42", "supported"});
  bad = p, bad.src = src.data() + 1;
  expect_error([&] { dequantize_bf16(bad); }, {"aligned"});
  bad = p, bad.type = DType::F32, bad.row_elems = 8, bad.src_row_bytes = 34;
  expect_error([&] { dequantize_bf16(bad); }, {"multiple of 4"});
}

}  // namespace
}  // namespace flint::cpu
