// The engine with a backend that samples on its device (Backend::forward_sample), run here through TwinBackend: the
// CUDA backend's forward pass, its packed sampling batch and the sampler kernel's twin, on tiny-cuda-qwen2. What
// this proves on a machine without a GPU: the engine hands every row its parameters, penalty lists and draw key
// (seed, output position); only ids come back; greedy tokens equal the host sampler's; seeded draws do not depend on
// the batch or on a step that brought logits back for top logprobs. The kernel against the twin is
// tests/gpu/ops_gpu_test.cu's.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "engine/engine.h"
#include "model/model_loader.h"
#include "model/twin_backend.h"
#include "engine_test_util.h"

namespace flint {
namespace {

using test::collect;
using test::Collected;

const LoadedModel& model() {
  static const LoadedModel m = load_model(FLINT_TEST_DATA_DIR "/tiny-cuda-qwen2");
  return m;
}

TwinBackend make_twin(bool sample_on_device) {
  return TwinBackend(model().config, model().weights,
                     {.num_kv_blocks = 48, .max_tokens_per_step = 64, .max_seqs_per_step = 8,
                      .sample_on_device = sample_on_device});
}

EngineConfig engine_config(bool device_sampling = true) {
  EngineConfig c;
  c.scheduler = {.max_num_seqs = 8, .max_num_batched_tokens = 64};
  c.device_sampling = device_sampling;
  return c;
}

std::vector<int32_t> prompt_of(int32_t len, int32_t salt) {
  std::vector<int32_t> p;
  for (int32_t i = 0; i < len; ++i) p.push_back((len * 37 + i * 11 + salt * 5) % 250);
  return p;
}

EngineRequest request(std::vector<int32_t> prompt, int32_t max_tokens, float temperature, uint64_t seed = 0) {
  EngineRequest r;
  r.prompt_token_ids = std::move(prompt);
  r.sampling.temperature = temperature;
  r.sampling.seed = seed;
  r.stopping.max_tokens = max_tokens;
  r.stopping.ignore_eos = true;
  return r;
}

Collected run_one(Engine& engine, EngineRequest r) {
  SubmitResult s = engine.submit(std::move(r));
  EXPECT_TRUE(s.status.ok()) << s.status.message;
  return collect(*s.stream);
}

// Counts which entry point the engine used.
class CountingBackend : public Backend {
 public:
  explicit CountingBackend(Backend& inner) : inner_(inner) {}
  void forward(const StepPlan& plan, float* logits) override {
    ++forwards;
    inner_.forward(plan, logits);
  }
  bool samples_on_device() const override { return inner_.samples_on_device(); }
  bool decode_matches_prefill() const override { return inner_.decode_matches_prefill(); }
  void forward_sample(const StepPlan& plan, const cpu::SampleBatch& batch, int32_t* ids, float* logprobs) override {
    ++forward_samples;
    inner_.forward_sample(plan, batch, ids, logprobs);
  }
  const ModelConfig& config() const override { return inner_.config(); }
  int32_t block_size() const override { return inner_.block_size(); }
  int32_t num_kv_blocks() const override { return inner_.num_kv_blocks(); }
  std::atomic<int> forwards{0}, forward_samples{0};

 private:
  Backend& inner_;
};

TEST(EngineDeviceSampling, GreedyTokensEqualTheHostSamplersAndOnlyIdsComeBack) {
  TwinBackend device = make_twin(true);
  CountingBackend counting(device);
  TwinBackend host = make_twin(false);
  std::vector<int32_t> on_device, on_host;
  {
    Engine engine(counting, nullptr, engine_config());
    Collected c = run_one(engine, request(prompt_of(20, 1), 24, 0.0f));
    ASSERT_TRUE(c.final && c.final->status.ok());
    on_device = c.token_ids;
  }
  {
    Engine engine(host, nullptr, engine_config());
    on_host = run_one(engine, request(prompt_of(20, 1), 24, 0.0f)).token_ids;
  }
  EXPECT_EQ(on_device.size(), 24u);
  EXPECT_EQ(on_device, on_host);
  EXPECT_EQ(counting.forwards.load(), 0);  // no step brought logits back
  EXPECT_GE(counting.forward_samples.load(), 24);
}

TEST(EngineDeviceSampling, ASeededRequestDrawsTheSameTokensAloneBatchedAndWithTopLogprobs) {
  EngineRequest r = request(prompt_of(12, 2), 20, 0.9f, 1234);
  r.sampling.top_k = 40;
  r.sampling.top_p = 0.95f;
  TwinBackend twin = make_twin(true);
  Engine engine(twin, nullptr, engine_config());
  const std::vector<int32_t> alone = run_one(engine, r).token_ids;
  ASSERT_EQ(alone.size(), 20u);
  EXPECT_EQ(run_one(engine, r).token_ids, alone);  // same seed, same tokens

  // Batched with five others (one of them asking for top logprobs, so some steps bring logits back and the twin
  // samples every row on the host): the same tokens.
  std::vector<std::shared_ptr<RequestStream>> others;
  for (int i = 0; i < 5; ++i) {
    EngineRequest o = request(prompt_of(5 + 3 * i, 10 + i), 12 + i, 1.0f, 99 + uint64_t(i));
    if (i == 2) o.sampling.num_logprobs = 3;
    others.push_back(engine.submit(std::move(o)).stream);
  }
  SubmitResult mine = engine.submit(r);
  ASSERT_TRUE(mine.status.ok());
  EXPECT_EQ(collect(*mine.stream).token_ids, alone);
  for (auto& s : others) EXPECT_TRUE(collect(*s).final->status.ok());

  // The request itself asking for top logprobs (every step of it on the host path): the same tokens, and each
  // token's logprob is among its alternatives' when it is one of them.
  EngineRequest with_top = r;
  with_top.sampling.num_logprobs = 5;
  Collected c = run_one(engine, with_top);
  EXPECT_EQ(c.token_ids, alone);
  size_t n = 0;
  for (const StreamDelta& d : c.deltas)
    for (const TokenLogprobs& lp : d.logprobs) {
      ASSERT_EQ(lp.top.size(), 5u);
      EXPECT_LE(lp.logprob, 0.0f);
      EXPECT_TRUE(std::is_sorted(lp.top.begin(), lp.top.end(),
                                 [](const TokenLogprob& a, const TokenLogprob& b) { return a.logprob > b.logprob; }));
      for (const TokenLogprob& t : lp.top) {
        if (t.token_id == lp.token_id) {
          EXPECT_NEAR(t.logprob, lp.logprob, 1e-4f);
        }
      }
      ++n;
    }
  EXPECT_EQ(n, alone.size());
}

TEST(EngineDeviceSampling, DifferentSeedsDrawDifferentTokens) {
  TwinBackend twin = make_twin(true);
  Engine engine(twin, nullptr, engine_config());
  std::set<std::vector<int32_t>> outputs;
  for (uint64_t seed = 1; seed <= 4; ++seed) outputs.insert(run_one(engine, request(prompt_of(8, 3), 16, 1.5f, seed)).token_ids);
  EXPECT_GE(outputs.size(), 3u);  // four draws of 16 tokens from a near-flat distribution
}

TEST(EngineDeviceSampling, TheRepetitionPenaltyReachesTheDevice) {
  TwinBackend twin = make_twin(true);
  Engine engine(twin, nullptr, engine_config());
  // Greedy on a tiny random model loops; a prohibitive repetition penalty (over prompt and output) forbids every
  // token already seen, so no output token repeats and none is a prompt token.
  const std::vector<int32_t> prompt = prompt_of(10, 4);
  const std::vector<int32_t> plain = run_one(engine, request(prompt, 40, 0.0f)).token_ids;
  EngineRequest penalised = request(prompt, 40, 0.0f);
  penalised.sampling.repetition_penalty = 1e30f;
  const std::vector<int32_t> out = run_one(engine, penalised).token_ids;
  ASSERT_EQ(out.size(), 40u);
  EXPECT_EQ(std::set<int32_t>(out.begin(), out.end()).size(), out.size());
  for (int32_t t : out) EXPECT_EQ(std::count(prompt.begin(), prompt.end(), t), 0) << t;
  EXPECT_LT(std::set<int32_t>(plain.begin(), plain.end()).size(), plain.size()) << "the unpenalised run does not loop";
}

TEST(EngineDeviceSampling, APresencePenaltyChangesTheDrawnTokens) {
  TwinBackend twin = make_twin(true);
  Engine engine(twin, nullptr, engine_config());
  const std::vector<int32_t> plain = run_one(engine, request(prompt_of(6, 5), 30, 0.0f)).token_ids;
  EngineRequest r = request(prompt_of(6, 5), 30, 0.0f);
  r.sampling.presence_penalty = 2.0f;
  r.sampling.frequency_penalty = 2.0f;
  const std::vector<int32_t> penalised = run_one(engine, r).token_ids;
  EXPECT_NE(penalised, plain);
  EXPECT_GT(std::set<int32_t>(penalised.begin(), penalised.end()).size(), std::set<int32_t>(plain.begin(), plain.end()).size());
}

}  // namespace
}  // namespace flint
