// The small CUDA ops (kernels/cuda/ops.h) and the sampler (kernels/cuda/sampling.h) against their CPU twins
// (kernels/cpu/ops_bf16.h, kernels/cpu/sampling.h) on seeded random inputs with real and odd shapes, outputs
// poisoned before each run. Every op is asked for equal bits: the kernels do the twins' fp32 operations in the
// twins' order (see each header), and sampling's sums are exact integers. The one exception is the sampler's
// logprob, whose final log runs in the device's and the host's libm (|err| <= 1e-6 + 1e-6·|logprob|).
// Skips every test that needs a GPU when none is present; the argument checks run anywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/ops_bf16.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/sampling.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/sampling.h"
#include "tests/gpu/gpu_test_util.h"

namespace flint::cuda {
namespace {

using gpu_test::DeviceBuffer;
using gpu_test::summary_add;

std::vector<bf16_bits> random_bf16(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<bf16_bits> v(n);
  for (auto& b : v) b = cpu::f32_to_bf16(dist(rng));
  return v;
}
std::vector<float> random_f32(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sd);
  std::vector<float> v(n);
  for (auto& f : v) f = dist(rng);
  return v;
}

// Bit-for-bit comparison of n elements; records the case in the summary (ratio 0 when equal, infinity else).
template <class T>
void expect_same_bits(const char* kernel, const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  size_t bad = 0, first = 0;
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) == 0) continue;
    if (bad++ == 0) first = i;
    if constexpr (std::is_same_v<T, float>) worst = std::max(worst, double(std::fabs(got[i] - want[i])));
    else if constexpr (std::is_same_v<T, bf16_bits>) worst = std::max(worst, double(std::fabs(cpu::bf16_to_f32(got[i]) - cpu::bf16_to_f32(want[i]))));
    else worst = INFINITY;
  }
  summary_add(kernel, bad ? INFINITY : 0.0, bad ? (std::isnan(worst) ? INFINITY : worst) : 0.0);
  EXPECT_EQ(bad, 0u) << kernel << " " << what << ": " << bad << " of " << got.size() << " elements differ, first at " << first;
}

// ---- embedding -----------------------------------------------------------------------------------------------

TEST(OpsGpu, EmbeddingMatchesTwin) {
  REQUIRE_GPU();
  struct Shape { int vocab, hidden, ld_table, ld_out; };
  const Shape shapes[] = {{49152, 576, 576, 576}, {1000, 4096, 4096, 4104}, {99, 111, 113, 111}, {7, 1, 1, 1}};
  uint32_t seed = 1;
  for (const Shape& s : shapes) {
    const auto table = random_bf16(size_t(s.vocab) * s.ld_table, seed++);
    std::mt19937 rng(seed++);
    std::vector<int32_t> ids(37);
    for (auto& id : ids) id = int32_t(rng() % uint32_t(s.vocab));
    ids[3] = -1, ids[7] = s.vocab, ids[11] = 1 << 30;  // out of range: zeros
    DeviceBuffer d_table(table.size() * 2), d_ids(ids.size() * 4);
    d_table.upload(table), d_ids.upload(ids);
    for (ActType type : {ActType::F32, ActType::BF16}) {
      const size_t esz = type == ActType::F32 ? 4 : 2, n = ids.size() * size_t(s.ld_out);
      EmbeddingParams p;
      p.num_tokens = int(ids.size()), p.vocab = s.vocab, p.hidden = s.hidden, p.ld_table = s.ld_table;
      p.out_type = type, p.ld_out = s.ld_out;
      DeviceBuffer d_out(n * esz);
      d_out.poison();
      // The twin's output starts with the same poison so padding columns compare equal only if untouched.
      std::vector<uint8_t> want(n * esz, 0xFF);
      EmbeddingParams h = p;
      h.ids = ids.data(), h.table = table.data(), h.out = want.data();
      cpu::embedding_bf16(h);
      p.ids = d_ids.as<int32_t>(), p.table = d_table.as<bf16_bits>(), p.out = d_out.as<void>();
      std::string why;
      ASSERT_EQ(embedding(p, nullptr, &why), cudaSuccess) << why;
      CUDA_CHECK(cudaDeviceSynchronize());
      expect_same_bits("embedding", d_out.download<uint8_t>(n * esz), want,
                       "hidden " + std::to_string(s.hidden) + (type == ActType::F32 ? " f32" : " bf16"));
    }
  }
}

// ---- add + RMSNorm ---------------------------------------------------------------------------------------------

// splits: 0 no delta, 1 one delta, S > 1 the delta as S slices rows · ld_delta apart (a matmul's partial sums).
void run_add_rmsnorm(int rows, int hidden, int splits, int pad, int x_offset, uint32_t seed) {
  const std::string what = "rows " + std::to_string(rows) + " hidden " + std::to_string(hidden) + " delta splits " +
                           std::to_string(splits) + (x_offset ? " misaligned" : "");
  const bool with_delta = splits > 0;
  const int ldx = hidden + pad, ld_delta = hidden + pad, ld_out = hidden + pad;
  const int64_t ld_split = int64_t(rows) * ld_delta;
  const auto x = random_f32(size_t(rows) * ldx + size_t(x_offset), seed, 3.0f);
  const auto delta = random_f32(size_t(std::max(splits, 1)) * size_t(ld_split), seed + 1, 2.0f);
  const auto w = random_bf16(size_t(hidden), seed + 2, 0.2f, 2.0f);
  DeviceBuffer d_x(x.size() * 4), d_delta(delta.size() * 4), d_w(w.size() * 2), d_out(size_t(rows) * ld_out * 2);
  d_x.upload(x), d_delta.upload(delta), d_w.upload(w);
  d_out.poison();
  AddRmsNormParams p;
  p.num_rows = rows, p.hidden = hidden, p.ldx = ldx, p.ld_delta = ld_delta, p.ld_out = ld_out, p.eps = 1e-6f;
  p.delta_splits = std::max(splits, 1), p.ld_split = ld_split;
  auto want_x = x;
  std::vector<bf16_bits> want_out(size_t(rows) * ld_out, 0xFFFF);
  AddRmsNormParams h = p;
  h.x = want_x.data() + x_offset, h.maybe_delta = with_delta ? delta.data() : nullptr, h.w = w.data();
  h.out = want_out.data();
  cpu::add_rmsnorm(h);
  p.x = d_x.as<float>() + x_offset, p.maybe_delta = with_delta ? d_delta.as<float>() : nullptr;
  p.w = d_w.as<bf16_bits>(), p.out = d_out.as<bf16_bits>();
  std::string why;
  ASSERT_EQ(add_rmsnorm(p, nullptr, &why), cudaSuccess) << why;
  CUDA_CHECK(cudaDeviceSynchronize());
  expect_same_bits("add_rmsnorm.x", d_x.download<float>(x.size()), want_x, what);
  expect_same_bits("add_rmsnorm", d_out.download<bf16_bits>(want_out.size()), want_out, what);
}

TEST(OpsGpu, AddRmsNormMatchesTwinBitForBit) {
  REQUIRE_GPU();
  uint32_t seed = 100;
  for (int hidden : {576, 896, 1536, 2048, 3584, 4096, 8192})  // real widths, 16-byte path
    for (int rows : {1, 19, 256}) {
      run_add_rmsnorm(rows, hidden, 1, 0, 0, seed += 3);
      run_add_rmsnorm(rows, hidden, 0, 8, 0, seed += 3);
      run_add_rmsnorm(rows, hidden, rows == 256 ? 2 : 8, 0, 0, seed += 3);  // split-K partials of the O / down
    }
  for (int hidden : {1, 19, 111, 500, 4099})  // odd widths and a misaligned x: the element-by-element path
    for (int rows : {1, 99}) {
      run_add_rmsnorm(rows, hidden, 1, 3, 0, seed += 3);
      run_add_rmsnorm(rows, hidden, 1, 0, 1, seed += 3);
      run_add_rmsnorm(rows, hidden, 3, 3, 0, seed += 3);
    }
}

// ---- the final norm's gather (row ids) ---------------------------------------------------------------------------

TEST(OpsGpu, AddRmsNormWithRowIdsMatchesTwinBitForBit) {
  REQUIRE_GPU();
  struct Shape { int src_rows, hidden, pad, splits; };
  const Shape shapes[] = {{300, 2048, 0, 1}, {300, 576, 8, 0}, {64, 1536, 0, 3}, {99, 111, 3, 1}, {19, 37, 5, 2}};
  uint32_t seed = 7;
  for (const Shape& sh : shapes) {
    const std::string what = "src rows " + std::to_string(sh.src_rows) + " hidden " + std::to_string(sh.hidden) +
                             " splits " + std::to_string(sh.splits);
    const int ld = sh.hidden + sh.pad;
    const int64_t ld_split = int64_t(sh.src_rows) * ld;
    std::mt19937 rng(seed);
    std::vector<int32_t> ids = {sh.src_rows - 1, 0, 5, 5, -1, sh.src_rows, 2};
    for (int i = 0; i < 40; ++i) ids.push_back(int32_t(rng() % uint32_t(sh.src_rows)));
    const auto x = random_f32(size_t(sh.src_rows) * ld, seed++, 3.0f);
    const auto delta = random_f32(size_t(std::max(sh.splits, 1)) * size_t(ld_split), seed++, 2.0f);
    const auto w = random_bf16(size_t(sh.hidden), seed++, 0.2f, 2.0f);
    AddRmsNormParams p;
    p.num_rows = int(ids.size()), p.hidden = sh.hidden, p.num_src_rows = sh.src_rows, p.ldx = ld, p.ld_delta = ld;
    p.delta_splits = std::max(sh.splits, 1), p.ld_split = ld_split, p.ld_out = ld, p.eps = 1e-6f;
    auto want_x = x;
    std::vector<bf16_bits> want(ids.size() * size_t(ld), 0xFFFF);
    AddRmsNormParams h = p;
    h.maybe_row_ids = ids.data(), h.x = want_x.data(), h.maybe_delta = sh.splits ? delta.data() : nullptr;
    h.w = w.data(), h.out = want.data();
    cpu::add_rmsnorm(h);
    DeviceBuffer d_x(x.size() * 4), d_delta(delta.size() * 4), d_w(w.size() * 2), d_ids(ids.size() * 4),
        d_out(want.size() * 2);
    d_x.upload(x), d_delta.upload(delta), d_w.upload(w), d_ids.upload(ids);
    d_out.poison();
    p.maybe_row_ids = d_ids.as<int32_t>(), p.x = d_x.as<float>();
    p.maybe_delta = sh.splits ? d_delta.as<float>() : nullptr, p.w = d_w.as<bf16_bits>(), p.out = d_out.as<bf16_bits>();
    std::string why;
    ASSERT_EQ(add_rmsnorm(p, nullptr, &why), cudaSuccess) << why;
    CUDA_CHECK(cudaDeviceSynchronize());
    expect_same_bits("add_rmsnorm.row_ids", d_out.download<bf16_bits>(want.size()), want, what);
    expect_same_bits("add_rmsnorm.row_ids.x", d_x.download<float>(x.size()), x, what + " (x is only read)");
  }
}

// ---- dequantisation --------------------------------------------------------------------------------------------

// Random bytes with sane fp16 scales (as tests/unit/ops_bf16_test.cpp); plain types random finite values.
std::vector<uint8_t> random_weight(DType t, int64_t rows, int64_t n, uint64_t row_bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto info = dtype_info(t);
  std::vector<uint8_t> bytes(size_t(rows) * row_bytes);
  for (auto& b : bytes) b = uint8_t(rng());
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f), value(-3.0f, 3.0f);
  auto put16 = [&](size_t off, uint16_t v) { std::memcpy(bytes.data() + off, &v, 2); };
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n / info.block_size; ++i) {
      const size_t b = size_t(r) * row_bytes + size_t(i) * size_t(info.block_bytes);
      switch (t) {
        case DType::Q8_0: case DType::Q4_0: put16(b, cpu::f32_to_f16(scale(rng))); break;
        case DType::Q4_1: case DType::Q4_K: put16(b, cpu::f32_to_f16(scale(rng))), put16(b + 2, cpu::f32_to_f16(scale(rng))); break;
        case DType::Q6_K: put16(b + offsetof(cpu::BlockQ6_K, d), cpu::f32_to_f16(scale(rng))); break;
        case DType::F16: put16(b, cpu::f32_to_f16(value(rng))); break;
        case DType::BF16: put16(b, cpu::f32_to_bf16(value(rng))); break;
        case DType::F32: { const float f = value(rng); std::memcpy(bytes.data() + b, &f, 4); } break;
      }
    }
  return bytes;
}

TEST(OpsGpu, DequantizeMatchesTheRoundedCpuDequantizationBitForBit) {
  REQUIRE_GPU();
  uint32_t seed = 300;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K}) {
    const bool k_quant = dtype_info(t).block_size == 256;
    struct Shape { int64_t rows, elems, extra_bytes, ld_pad; };
    const Shape shapes[] = {{576, k_quant ? 1536 : 576, 0, 0}, {37, k_quant ? 768 : 96, 6, 3}};
    for (const Shape& s : shapes) {
      const uint64_t row_bytes = *dtype_bytes(t, uint64_t(s.elems)) + uint64_t(s.extra_bytes) * (t == DType::F32 ? 2 : 1);
      const auto src = random_weight(t, s.rows, s.elems, row_bytes, seed++);
      DequantParams p;
      p.type = t, p.num_rows = s.rows, p.row_elems = s.elems, p.src_row_bytes = row_bytes, p.ld_dst = s.elems + s.ld_pad;
      std::vector<bf16_bits> want(size_t(s.rows * p.ld_dst), 0xFFFF);
      DequantParams h = p;
      h.src = src.data(), h.dst = want.data();
      cpu::dequantize_bf16(h);
      DeviceBuffer d_src(src.size()), d_dst(want.size() * 2);
      d_src.upload(src);
      d_dst.poison();
      p.src = d_src.as<void>(), p.dst = d_dst.as<bf16_bits>();
      std::string why;
      ASSERT_EQ(dequantize(p, nullptr, &why), cudaSuccess) << why;
      CUDA_CHECK(cudaDeviceSynchronize());
      expect_same_bits("dequantize", d_dst.download<bf16_bits>(want.size()), want,
                       std::string(dtype_info(t).name) + " " + std::to_string(s.rows) + "x" + std::to_string(s.elems));
    }
  }
}

// ---- sampling ------------------------------------------------------------------------------------------------------

// Row r's parameters, cycling through greedy, each filter alone, combinations and penalties.
SampleRow row_params(int r, std::mt19937& rng) {
  SampleRow s;
  s.seed = rng(), s.step = rng() % 1000;
  switch (r % 8) {
    case 0: s.temperature = 0.0f; break;
    case 1: s.temperature = 0.7f, s.top_k = 40; break;
    case 2: s.temperature = 1.0f, s.top_p = 0.9f; break;
    case 3: s.temperature = 1.2f, s.min_p = 0.05f; break;
    case 4: s.temperature = 0.8f, s.top_k = 100, s.top_p = 0.95f, s.min_p = 0.01f; break;
    case 5: s.temperature = 1.0f; break;  // untruncated: the whole vocabulary
    case 6: s.temperature = 0.6f, s.top_k = 1000, s.top_p = 0.5f, s.repetition_penalty = 1.3f; break;
    case 7: s.temperature = 1.1f, s.top_p = 0.99f, s.presence_penalty = 0.5f, s.frequency_penalty = 0.3f, s.repetition_penalty = 0.9f; break;
  }
  return s;
}

// The split sampler on (smallest slice `ids`) for the guard's life, or off (0).
class SplitSampler {
 public:
  explicit SplitSampler(int ids) : saved_(sample_split_min_slice()) { set_sample_split_min_slice(ids); }
  ~SplitSampler() { set_sample_split_min_slice(saved_); }
  SplitSampler(const SplitSampler&) = delete;
  SplitSampler& operator=(const SplitSampler&) = delete;

 private:
  int saved_;
};

// How the kernel is asked to sample: a block per row, or split (slices of at least `split_slice` ids) with or
// without the host copies of the rows' parameters.
struct SampleMode {
  int split_slice = 0;
  bool host_rows = false;
  bool flat = false;  // every logit of a row equal (before penalties): every order decided by the ids alone
};

void run_sample(int rows, int vocab, bool ties, uint32_t seed, SampleMode mode = {}) {
  const SplitSampler split(mode.split_slice);
  const int blocks = sample_blocks_per_row(rows, vocab);
  const std::string what = "rows " + std::to_string(rows) + " vocab " + std::to_string(vocab) + (ties ? " ties" : "") +
                           (mode.split_slice ? " split " + std::to_string(blocks) + " blocks a row" : "") +
                           (mode.host_rows ? " (host rows)" : "") + (mode.flat ? " flat" : "");
  if (mode.split_slice) {
    EXPECT_GE(blocks, vocab >= 2 * mode.split_slice ? 2 : 1) << what;
  }
  std::mt19937 rng(seed);
  const int64_t ld = vocab + (vocab % 2);
  auto logits = random_f32(size_t(rows) * ld, seed, 3.0f);
  if (ties) for (float& x : logits) x = std::round(x * 2.0f) / 2.0f;
  if (mode.flat) for (float& x : logits) x = 1.25f;
  std::vector<SampleRow> params;
  cpu::PenaltyLists pen;
  for (int r = 0; r < rows; ++r) {
    params.push_back(row_params(r, rng));
    std::vector<int32_t> context, output;
    for (int i = 0; i < 200; ++i) context.push_back(int32_t(rng() % uint32_t(vocab)));
    for (int i = 0; i < 60; ++i) output.push_back(int32_t(rng() % uint32_t(vocab)));
    context.insert(context.end(), output.begin(), output.end());
    pen.add_row(context, output, vocab);
  }
  SampleParams p;
  p.num_rows = rows, p.vocab = vocab, p.ld_logits = ld;
  // The twin, rows spread over the host's cores (each row independent).
  auto want_logits = logits;
  std::vector<int32_t> want_tokens(size_t(rows), -1);
  std::vector<float> want_logprobs(size_t(rows), NAN);
  {
    const int threads = int(std::clamp(std::thread::hardware_concurrency(), 1u, 16u));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        for (int r = t; r < rows; r += threads) {
          SampleParams h = p;
          h.num_rows = 1, h.logits = want_logits.data() + int64_t(r) * ld, h.rows = &params[size_t(r)];
          const int32_t rep[2] = {0, pen.rep_offsets[size_t(r) + 1] - pen.rep_offsets[size_t(r)]};
          const int32_t freq[2] = {0, pen.freq_offsets[size_t(r) + 1] - pen.freq_offsets[size_t(r)]};
          h.maybe_rep_offsets = rep, h.rep_ids = pen.rep_ids.data() + pen.rep_offsets[size_t(r)];
          h.maybe_freq_offsets = freq, h.freq_ids = pen.freq_ids.data() + pen.freq_offsets[size_t(r)];
          h.freq_counts = pen.freq_counts.data() + pen.freq_offsets[size_t(r)];
          h.token_ids = &want_tokens[size_t(r)], h.maybe_logprobs = &want_logprobs[size_t(r)];
          cpu::sample(h);
        }
      });
    for (auto& th : pool) th.join();
  }
  DeviceBuffer d_logits(logits.size() * 4), d_rows(params.size() * sizeof(SampleRow));
  DeviceBuffer d_rep_off(pen.rep_offsets.size() * 4), d_rep(pen.rep_ids.size() * 4);
  DeviceBuffer d_freq_off(pen.freq_offsets.size() * 4), d_freq(pen.freq_ids.size() * 4), d_cnt(pen.freq_counts.size() * 4);
  DeviceBuffer d_tokens(size_t(rows) * 4), d_logprobs(size_t(rows) * 4);
  d_logits.upload(logits), d_rows.upload(params), d_rep_off.upload(pen.rep_offsets), d_rep.upload(pen.rep_ids);
  d_freq_off.upload(pen.freq_offsets), d_freq.upload(pen.freq_ids), d_cnt.upload(pen.freq_counts);
  d_tokens.poison(), d_logprobs.poison();
  p.logits = d_logits.as<float>(), p.rows = d_rows.as<SampleRow>();
  p.maybe_rep_offsets = d_rep_off.as<int32_t>(), p.rep_ids = d_rep.as<int32_t>();
  p.maybe_freq_offsets = d_freq_off.as<int32_t>(), p.freq_ids = d_freq.as<int32_t>(), p.freq_counts = d_cnt.as<int32_t>();
  p.token_ids = d_tokens.as<int32_t>(), p.maybe_logprobs = d_logprobs.as<float>();
  DeviceBuffer workspace(std::max<size_t>(sample_workspace_bytes(rows), 16));
  if (mode.split_slice) workspace.poison(), p.maybe_workspace = workspace.as<void>(), p.workspace_bytes = workspace.bytes();
  if (mode.host_rows) p.maybe_host_rows = params.data();
  std::string why;
  ASSERT_EQ(sample(p, nullptr, &why), cudaSuccess) << why;
  CUDA_CHECK(cudaDeviceSynchronize());
  expect_same_bits("sample.penalties", d_logits.download<float>(logits.size()), want_logits, what);
  expect_same_bits("sample.token", d_tokens.download<int32_t>(size_t(rows)), want_tokens, what);
  const auto got_lp = d_logprobs.download<float>(size_t(rows));
  double worst = 0.0, worst_abs = 0.0;
  for (int r = 0; r < rows; ++r) {
    const double err = std::fabs(double(got_lp[size_t(r)]) - want_logprobs[size_t(r)]);
    const double tol = 1e-6 + 1e-6 * std::fabs(want_logprobs[size_t(r)]);
    worst = std::max(worst, std::isnan(err) ? INFINITY : err / tol), worst_abs = std::max(worst_abs, err);
    EXPECT_LE(err, tol) << what << " row " << r << ": logprob " << got_lp[size_t(r)] << " vs twin " << want_logprobs[size_t(r)];
  }
  summary_add("sample.logprob", worst, worst_abs);
  // Without logprobs (the kernel then skips the sum they need): the same tokens from the same logits.
  d_logits.upload(logits), d_tokens.poison();
  p.maybe_logprobs = nullptr;
  ASSERT_EQ(sample(p, nullptr, &why), cudaSuccess) << why;
  CUDA_CHECK(cudaDeviceSynchronize());
  expect_same_bits("sample.token", d_tokens.download<int32_t>(size_t(rows)), want_tokens, what + " (no logprobs)");
}

TEST(OpsGpu, SampleMatchesTwinToken) {
  REQUIRE_GPU();
  uint32_t seed = 900;
  for (int vocab : {1, 7, 1000, 32000, 49152, 151936}) run_sample(16, vocab, false, seed++);
  run_sample(16, 49152, true, seed++);   // ties: lowest id first in every order
  run_sample(256, 49152, false, seed++); // a full decode batch
  run_sample(64, 151936, false, seed++);
}

// The split sampler: a row over several blocks, one stage a launch (kernels/cuda/sampling_split.cu). The same
// tokens, penalised logits and logprobs as the twin, bit for bit. Slices far below the production 2048 ids split
// the small vocabularies too (slices of 4 and 3 ids at vocab 7); the emulator and the device differ in SM count,
// so in blocks per row. Rows of 16-byte-aligned and of misaligned starts (odd vocab: every other row).
TEST(OpsGpu, SplitSamplerMatchesTwinToken) {
  REQUIRE_GPU();
  uint32_t seed = 1900;
  run_sample(2, 7, false, seed++, {4, false});
  run_sample(3, 1000, false, seed++, {64, true});
  run_sample(8, 1001, true, seed++, {16, false});      // ties, misaligned rows, every parameter mix
  run_sample(8, 32000, false, seed++, {256, true});
  run_sample(1, 49152, false, seed++, {2048, false});  // the production slice
  run_sample(8, 49152, true, seed++, {2048, true});    // ties: selects that run down to the ids' digits
  run_sample(8, 151936, false, seed++, {2048, false});
  run_sample(16, 151936, false, seed++, {2048, true});
  // Flat rows (every logit equal but the penalised ones): the max ties across slices, and top-k and top-p select by
  // id digits through the candidate list, split and not.
  run_sample(8, 49152, false, seed++, {0, false, true});
  run_sample(8, 49152, false, seed++, {2048, true, true});
}

// A temperature so small that 1 / T overflows (1e-40, inside the API's [0, 100]): every weight is 0, the kept total
// is 0, and kernel and twin both pick the top token (kernels/sampling_params.h, step 5); the logprob is NaN in both,
// so only the tokens are compared.
TEST(OpsGpu, SampleWithAllWeightsZeroPicksTheTopTokenAsTheTwin) {
  REQUIRE_GPU();
  const int rows = 4, vocab = 3000;
  const auto logits = random_f32(size_t(rows) * vocab, 77, 3.0f);
  std::vector<SampleRow> params(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) {
    SampleRow& s = params[size_t(r)];
    s.temperature = 1e-40f, s.seed = uint64_t(r) + 1, s.step = 5;
    s.top_k = r % 2 ? 50 : 0, s.top_p = r / 2 ? 0.9f : 1.0f;
  }
  auto host = logits;
  std::vector<int32_t> want(size_t(rows), -2);
  SampleParams p;
  p.num_rows = rows, p.vocab = vocab, p.ld_logits = vocab, p.logits = host.data(), p.rows = params.data();
  p.token_ids = want.data();
  cpu::sample(p);
  for (int split_slice : {0, 64}) {  // a block per row; split
    const SplitSampler split(split_slice);
    DeviceBuffer d_logits(logits.size() * 4), d_rows(params.size() * sizeof(SampleRow)), d_tokens(size_t(rows) * 4);
    DeviceBuffer workspace(sample_workspace_bytes(rows));
    d_logits.upload(logits), d_rows.upload(params), d_tokens.poison();
    p.logits = d_logits.as<float>(), p.rows = d_rows.as<SampleRow>(), p.token_ids = d_tokens.as<int32_t>();
    p.maybe_workspace = workspace.as<void>(), p.workspace_bytes = workspace.bytes();
    std::string why;
    ASSERT_EQ(sample(p, nullptr, &why), cudaSuccess) << why;
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<int32_t> got = d_tokens.download<int32_t>(size_t(rows));
    for (int r = 0; r < rows; ++r) {
      const float* row = logits.data() + int64_t(r) * vocab;
      const int32_t top = int32_t(std::max_element(row, row + vocab) - row);
      EXPECT_EQ(want[size_t(r)], top) << "twin, row " << r;
      EXPECT_EQ(got[size_t(r)], top) << "kernel, row " << r << ", " << sample_blocks_per_row(rows, vocab)
                                     << " blocks a row";
    }
    summary_add("sample.zero_weights", got == want ? 0.0 : INFINITY, 0);
  }
}

// ---- argument checks: the launchers refuse before touching the device, so these run anywhere ---------------------

#ifdef FLINT_CUDA_EMU
__global__ void write_one(int* p) {
  cuda::pdl_begin();
  *p = 1;
}

// A driver that refuses the programmatic-dependent-launch attribute (the emulator's hook plays one): launch_kernel
// retries the launch without it, the op's result is unchanged, and PDL stays off for the process from then on.
// A launch that fails without the attribute too (block size 0) reports that error and leaves PDL as it was.
TEST(OpsGpu, ALaunchRefusedWithPdlIsRetriedWithout) {
  REQUIRE_GPU();
  cuda::pdl_set(true);
  cuda_emu::refuse_pdl(true);
  DeviceBuffer one(4);
  EXPECT_EQ(cuda::launch_kernel(write_one, dim3(1), dim3(0), 0, nullptr, one.as<int>()), cudaErrorInvalidConfiguration);
  EXPECT_TRUE(cuda::pdl_enabled());
  run_add_rmsnorm(3, 576, 2, 0, 0, 4242);  // against the twin, bit for bit
  cuda_emu::refuse_pdl(false);
  EXPECT_FALSE(cuda::pdl_enabled());
  cuda::pdl_set(true);
}
#endif

TEST(OpsGpu, LaunchersRejectBadArgumentsWithTheFieldsName) {
  std::string why;
  EmbeddingParams e;
  e.num_tokens = 1, e.vocab = 10, e.hidden = 8, e.ld_table = 8, e.ld_out = 4;
  EXPECT_EQ(embedding(e, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("ld_out"), std::string::npos) << why;
  AddRmsNormParams n;
  n.num_rows = 1, n.hidden = 8, n.ldx = 8, n.ld_out = 8, n.eps = -1.0f;
  EXPECT_EQ(add_rmsnorm(n, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("eps"), std::string::npos) << why;
  static const int32_t row_id = 0;
  n.eps = 1e-6f, n.maybe_row_ids = &row_id, n.num_src_rows = -2;
  EXPECT_EQ(add_rmsnorm(n, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("num_src_rows"), std::string::npos) << why;
  DequantParams d;
  d.type = DType::Q6_K, d.num_rows = 1, d.row_elems = 100;
  EXPECT_EQ(dequantize(d, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("Q6_K"), std::string::npos) << why;
  SampleParams s;
  s.num_rows = 1, s.vocab = 100, s.ld_logits = 50;
  EXPECT_EQ(sample(s, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("ld_logits"), std::string::npos) << why;
  // A misaligned workspace (the pointers are never dereferenced: the check comes first).
  alignas(16) static unsigned char scratch[64];
  s.ld_logits = 100, s.logits = reinterpret_cast<float*>(scratch), s.token_ids = reinterpret_cast<int32_t*>(scratch);
  s.rows = reinterpret_cast<const SampleRow*>(scratch);
  s.maybe_workspace = scratch + 4, s.workspace_bytes = 16;
  EXPECT_EQ(sample(s, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("workspace"), std::string::npos) << why;
  // Zero rows: nothing queued, success, whatever the pointers.
  AddRmsNormParams none;
  none.hidden = 8, none.ldx = 8, none.ld_out = 8;
  EXPECT_EQ(add_rmsnorm(none, nullptr, &why), cudaSuccess);
}

}  // namespace
}  // namespace flint::cuda
