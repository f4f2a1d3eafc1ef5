// TwinBackend (model/twin_backend.h): the CUDA backend's forward pass, packing, staging and graph-bucket padding
// run through the kernels' CPU twins, against CpuBackend on SmolLM2-135M (head_dim 64: the tiny test models' head
// dims are not ones the attention kernels take). What this leaves to the GPU: the kernels against the same twins
// (tests/gpu/*_test.cu) and the CUDA calls themselves (tests/gpu/cuda_backend_gpu_test.cpp).
//
// Bounds: top-1 identical or a near-tie (within 1% of the row's largest |logit|), per-row max|twin - cpu| /
// max|cpu| <= 5% (bf16 weights and activations against fp32); padded and unpadded decode bit-identical; the
// per-layer diff within 2^-4.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "model/backend_diff.h"
#include "model/cpu_backend.h"
#include "model/model_loader.h"
#include "model/twin_backend.h"
#include "test_util.h"

namespace flint {
namespace {

const std::string kSmolLM2 = std::string(FLINT_MODELS_DIR) + "/SmolLM2-135M-Instruct.Q4_1.gguf";

double worst_rel(const float* a, const float* b, int32_t vocab) {
  double max_abs = 0, ref = 0;
  for (int32_t i = 0; i < vocab; ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    max_abs = std::max(max_abs, std::isnan(d) ? INFINITY : d);
    ref = std::max(ref, std::fabs(double(a[i])));
  }
  return max_abs / ref;
}

int32_t argmax(const float* v, int32_t n) { return int32_t(std::max_element(v, v + n) - v); }

// Top-1 equal, or a near-tie under the CPU's logits: its logit for the twin's choice within 1% of the row's largest
// |logit| below its own top (bf16 rounding may flip a near-tie; a wrong computation picks tokens far down).
void expect_top1_or_near_tie(const float* cpu, const float* twin, int32_t vocab, const std::string& what) {
  const int32_t a = argmax(cpu, vocab), b = argmax(twin, vocab);
  if (a == b) return;
  double scale = 0;
  for (int32_t i = 0; i < vocab; ++i) scale = std::max(scale, std::fabs(double(cpu[i])));
  EXPECT_LE(double(cpu[a]) - double(cpu[b]), 0.01 * scale)
      << what << ": top-1 " << a << " (cpu) vs " << b << " (twin) is not a near-tie";
}

void check_prefill_and_padded_decode(const LoadedModel& model);

TEST(TwinBackend, PrefillAndBucketPaddedDecodeTrackTheCpuBackend) {
  if (!std::filesystem::exists(kSmolLM2)) GTEST_SKIP() << "run scripts/fetch-model.sh";
  check_prefill_and_padded_decode(load_model(kSmolLM2));
}

// The Qwen paths SmolLM2 (llama) does not take: q/k/v biases (head_dim 64), q/k norm with head_dim 128 and tied
// embeddings (scripts/make-cuda-tiny-models.py).
class TwinBackendQwen : public ::testing::TestWithParam<const char*> {};

TEST_P(TwinBackendQwen, PrefillPaddedDecodeAndPerLayerDiffTrackTheCpuBackend) {
  const LoadedModel model = load_model(std::string(FLINT_TEST_DATA_DIR) + "/" + GetParam());
  check_prefill_and_padded_decode(model);
  CpuBackend cpu(model.config, model.weights, {.num_kv_blocks = 4, .num_threads = 1});
  TwinBackend twin(model.config, model.weights, {.num_kv_blocks = 4, .max_tokens_per_step = 16, .max_seqs_per_step = 1});
  const DiffReport r = diff_backends(cpu, twin, test::iota_tokens(17, 13), kDiffDefaultRelBound);
  EXPECT_EQ(r.first_over, -1) << format_diff_report(r, kDiffDefaultRelBound);
}

INSTANTIATE_TEST_SUITE_P(Models, TwinBackendQwen, ::testing::Values("tiny-cuda-qwen2", "tiny-cuda-qwen3"),
                         [](const auto& info) { return std::string(info.param).substr(10); });

void check_prefill_and_padded_decode(const LoadedModel& model) {
  const int32_t vocab = model.config.vocab_size;
  CpuBackend cpu(model.config, model.weights, {.num_kv_blocks = 12, .num_threads = 2});
  // max_seqs_per_step 17: the prefill below wants all 17 positions' logits (a bucket of 17 tops 1, 2, ..., 16).
  TwinBackend padded(model.config, model.weights, {.num_kv_blocks = 12, .max_tokens_per_step = 32, .max_seqs_per_step = 17});
  TwinBackend eager(model.config, model.weights,
                    {.num_kv_blocks = 12, .max_tokens_per_step = 32, .max_seqs_per_step = 17, .pad_decode_to_buckets = false});
  test::expect_error([&] {  // more logit rows than its buffers hold
    TwinBackend small(model.config, model.weights, {.num_kv_blocks = 12, .max_tokens_per_step = 32, .max_seqs_per_step = 8});
    StepPlan p;
    p.add_sequence(test::iota_tokens(1, 9), 9, {0}, false);
    p.logit_rows = test::iota_tokens(0, 9);
    std::vector<float> out(9 * size_t(vocab));
    small.forward(p, out.data());
  }, {"9 logit rows exceeds its buffers"});
  // Three sequences prefilled in one mixed step (lengths 5, 9, 3), every position's logits.
  const std::vector<std::vector<int32_t>> prompts = {test::iota_tokens(vocab / 7, 5), test::iota_tokens(vocab / 3, 9),
                                                     test::iota_tokens(vocab - 3, 3)};
  StepPlan prefill;
  for (int32_t s = 0; s < 3; ++s)
    prefill.add_sequence(prompts[size_t(s)], int32_t(prompts[size_t(s)].size()), {4 * s, 4 * s + 1}, false);
  for (int32_t t = 0; t < prefill.num_tokens(); ++t) prefill.logit_rows.push_back(t);
  const size_t rows = prefill.logit_rows.size();
  std::vector<float> a(rows * size_t(vocab)), b(a.size()), e(a.size());
  cpu.forward(prefill, a.data());
  padded.forward(prefill, b.data());
  eager.forward(prefill, e.data());
  EXPECT_EQ(padded.last_bucket(), 0);  // a prefill runs eagerly
  for (size_t r = 0; r < rows; ++r) {
    expect_top1_or_near_tie(a.data() + r * vocab, b.data() + r * vocab, vocab, "prefill row " + std::to_string(r));
    EXPECT_LE(worst_rel(a.data() + r * vocab, b.data() + r * vocab, vocab), 0.05) << "row " << r;
  }
  EXPECT_EQ(0, std::memcmp(b.data(), e.data(), b.size() * sizeof(float)));

  // Two decode steps of the three: padded to the bucket of 4 (as a graph replay) and unpadded, the same bits.
  std::vector<int32_t> kv = {5, 9, 3}, last_rows = {4, 13, 16};
  std::vector<float> da(3 * size_t(vocab)), db(da.size()), de(da.size());
  std::vector<int32_t> next(3);
  for (int32_t s = 0; s < 3; ++s) next[size_t(s)] = argmax(a.data() + size_t(last_rows[size_t(s)]) * vocab, vocab);
  for (int step = 0; step < 2; ++step) {
    StepPlan p;
    for (int32_t s = 0; s < 3; ++s) p.add_sequence({next[size_t(s)]}, ++kv[size_t(s)], {4 * s, 4 * s + 1}, true);
    cpu.forward(p, da.data());
    padded.forward(p, db.data());
    eager.forward(p, de.data());
    EXPECT_EQ(padded.last_bucket(), 4);
    EXPECT_EQ(eager.last_bucket(), 0);
    EXPECT_EQ(0, std::memcmp(db.data(), de.data(), db.size() * sizeof(float))) << "decode step " << step;
    for (int32_t s = 0; s < 3; ++s) {
      expect_top1_or_near_tie(da.data() + s * vocab, db.data() + s * vocab, vocab,
                              "decode step " + std::to_string(step) + " sequence " + std::to_string(s));
      EXPECT_LE(worst_rel(da.data() + s * vocab, db.data() + s * vocab, vocab), 0.05) << step << " " << s;
      next[size_t(s)] = argmax(da.data() + s * vocab, vocab);
    }
  }
}

// Decode graphs by block-table width (cuda_graph_widths): a step replays the narrowest graph holding its longest
// sequence; its logits are the same bits as the eager step's, whichever width it took.
TEST(TwinBackend, DecodeTakesTheNarrowestGraphWidthThatHoldsItsSequencesWithTheSameBits) {
  LoadedModel model = load_model(std::string(FLINT_TEST_DATA_DIR) + "/tiny-cuda-qwen2");
  model.config.max_context = 4096;  // a table of 256 blocks: graph widths 32, 128, 256 (contexts 512, 2048, 4096)
  const int32_t vocab = model.config.vocab_size;
  TwinBackend padded(model.config, model.weights, {.max_tokens_per_step = 1024, .max_seqs_per_step = 4});
  TwinBackend eager(model.config, model.weights,
                    {.max_tokens_per_step = 1024, .max_seqs_per_step = 4, .pad_decode_to_buckets = false});
  const std::vector<int32_t> lens = {20, 700};  // 2 and 44 blocks
  // A sequence's blocks, as the scheduler gives them: as many as its keys fill (the plan's table is as wide as the
  // longest list).
  auto blocks = [](int32_t first, int32_t kv_len) { return test::iota_tokens(first, (kv_len + 15) / 16); };
  std::vector<float> out(static_cast<size_t>(vocab)), out_e(static_cast<size_t>(vocab));
  for (int32_t s = 0; s < 2; ++s) {
    StepPlan p;
    p.add_sequence(test::iota_tokens(7 + s, lens[size_t(s)]), lens[size_t(s)], blocks(s * 100, lens[size_t(s)]), true);
    padded.forward(p, out.data());
    eager.forward(p, out_e.data());
  }
  std::vector<float> a(2 * size_t(vocab)), b(a.size());
  // The short sequence alone: the 512-token graph; both: the 2048-token one.
  for (int32_t both = 0; both < 2; ++both) {
    StepPlan p;
    p.add_sequence({11}, lens[0] + 1 + both, blocks(0, lens[0] + 1 + both), true);
    if (both) p.add_sequence({12}, lens[1] + 1, blocks(100, lens[1] + 1), true);
    a.assign(a.size(), NAN), b.assign(b.size(), NAN);
    padded.forward(p, a.data());
    eager.forward(p, b.data());
    EXPECT_EQ(padded.last_bucket(), both ? 2 : 1);
    EXPECT_EQ(padded.last_width(), both ? 128 : 32);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), size_t(p.num_seqs()) * size_t(vocab) * sizeof(float))) << both;
  }
}

TEST(TwinBackend, PerLayerDiffAgainstTheCpuBackendIsWithinTheBound) {
  if (!std::filesystem::exists(kSmolLM2)) GTEST_SKIP() << "run scripts/fetch-model.sh";
  const LoadedModel model = load_model(kSmolLM2);
  CpuBackend cpu(model.config, model.weights, {.num_kv_blocks = 2, .num_threads = 2});
  TwinBackend twin(model.config, model.weights, {.num_kv_blocks = 2, .max_tokens_per_step = 16, .max_seqs_per_step = 1});
  const DiffReport r = diff_backends(cpu, twin, test::iota_tokens(40, 7), kDiffDefaultRelBound);
  EXPECT_EQ(r.first_over, -1) << format_diff_report(r, kDiffDefaultRelBound);
  EXPECT_EQ(r.top1_agree, r.top1_total);
  ASSERT_EQ(r.rows.size(), 2u * (1 + 30 * 6 + 1 + 1));
  double worst = 0;
  for (const DiffRow& row : r.rows) worst = std::max(worst, row.rel);
  std::printf("twin vs cpu: worst intermediate rel error %.4g\n", worst);
}

}  // namespace
}  // namespace flint
