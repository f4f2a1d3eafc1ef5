// The engine on the CUDA backend: a request's greedy tokens and their logprobs, bit for bit, do not depend on what
// else the server is doing: the other requests in its steps (batch size, mixed prefill and decode steps, prompts cut
// into chunks by the token budget, graph buckets) or what the prefix cache holds from earlier requests. This is
// issue 4's batch invariance seen where a user sees it, through Engine and CudaBackend together (the kernels' own
// tests check it call by call). Runs on the device (flint_gpu_model_tests, scripts/gpu-check.sh) and on the CUDA
// emulator (CTest cuda_emu.backend, tests/data/tiny-cuda-qwen3); skips without a GPU.
//
// Not claimed: a sequence preempted and recomputed keeps its bits (its generated tokens' keys and values are then
// computed by a prefill step, not the decode steps that first made them, as in vLLM). Those requests must still end
// with their full length; the test checks only that.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/offline_runner.h"
#include "kernels/cuda/matmul.h"
#include "model/cuda_backend.h"
#include "model/model_loader.h"
#include "tests/gpu/require_gpu.h"
#include "tests/unit/engine_test_util.h"

namespace flint {
namespace {


// FLINT_MATMUL=cublas and =hybrid run cuBLASLt, whose bits depend on the number of rows (docs/operations.md): the
// bit-for-bit tests below do not apply to them.
#define REQUIRE_INVARIANT_MATMUL()                                                                          \
  do {                                                                                                     \
    if (cuda::matmul_pick(1) != cuda::MatmulKernel::Cublas && cuda::matmul_pick(256) != cuda::MatmulKernel::Cublas) \
      break;                                                                                               \
    GTEST_SKIP() << "FLINT_MATMUL runs cuBLASLt: rows are not batch invariant";                             \
  } while (0)

// $FLINT_GPU_MODEL when set (gpu-check.sh: the default model or a random one of its shape), else tiny-cuda-qwen3.
std::string engine_model_path() {
  const char* env = std::getenv("FLINT_GPU_MODEL");
  return env && *env ? env : std::string(FLINT_TEST_DATA_DIR) + "/tiny-cuda-qwen3";
}

const LoadedModel& model() {
  static const LoadedModel m = load_model(engine_model_path());
  return m;
}

// A backend sized for the scheduler below: room for every request at once (no preemption) unless `blocks` is small.
// The references (a request alone, a cold server) run eagerly (graphs = false): the runs they are compared with
// replay the decode graphs, so graph replay against eager steps is checked through the engine too.
std::unique_ptr<CudaBackend> make_backend(int32_t blocks, int32_t max_tokens, int32_t max_seqs, bool graphs = true) {
  return std::make_unique<CudaBackend>(model().config, model().weights,
                                       CudaBackendOptions{.num_kv_blocks = blocks, .max_tokens_per_step = max_tokens,
                                                          .max_seqs_per_step = max_seqs, .cuda_graphs = graphs,
                                                          .log = false});
}

// Passes every step to the CUDA backend and counts the kinds of step the engine made: what the tests below mean to
// cover has to have happened.
class StepCounter : public Backend {
 public:
  explicit StepCounter(Backend& inner) : inner_(inner) {}
  void forward(const StepPlan& plan, float* logits) override {
    count(plan);
    inner_.forward(plan, logits);
  }
  bool samples_on_device() const override { return inner_.samples_on_device(); }
  bool decode_matches_prefill() const override { return inner_.decode_matches_prefill(); }
  void forward_sample(const StepPlan& plan, const cpu::SampleBatch& batch, int32_t* ids, float* logprobs) override {
    count(plan);
    ++device_samples;
    inner_.forward_sample(plan, batch, ids, logprobs);
  }
  std::string fatal_error() const override { return inner_.fatal_error(); }
  const ModelConfig& config() const override { return inner_.config(); }
  int32_t block_size() const override { return inner_.block_size(); }
  int32_t num_kv_blocks() const override { return inner_.num_kv_blocks(); }
  // Steps with decodes and prefill chunks together; prefill chunks of one token.
  std::atomic<int> mixed_steps{0}, one_token_chunks{0}, device_samples{0};

 private:
  void count(const StepPlan& plan) {
    const int32_t decodes = plan.num_decode_seqs < 0 ? 0 : plan.num_decode_seqs;
    if (decodes > 0 && decodes < plan.num_seqs()) ++mixed_steps;
    for (int32_t s = decodes; s < plan.num_seqs(); ++s)
      one_token_chunks += plan.cu_seqlens[size_t(s) + 1] - plan.cu_seqlens[size_t(s)] == 1;
  }
  Backend& inner_;
};

EngineConfig engine_config(int32_t max_tokens, int32_t max_seqs) {
  EngineConfig c;
  c.scheduler = {.max_num_seqs = max_seqs, .max_num_batched_tokens = max_tokens};
  return c;
}

// Prompt ids spread over the vocabulary, different for each salt.
std::vector<int32_t> prompt_of(int32_t len, int32_t salt) {
  const int32_t vocab = model().config.vocab_size;
  std::vector<int32_t> p;
  for (int32_t i = 0; i < len; ++i) p.push_back(int32_t((int64_t(len) * 7919 + int64_t(i) * 104729 + salt * 31) % vocab));
  return p;
}

EngineRequest greedy(std::vector<int32_t> prompt, int32_t max_tokens) {
  EngineRequest r;
  r.prompt_token_ids = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.sampling.num_logprobs = 1;
  r.stopping.max_tokens = max_tokens;
  r.stopping.ignore_eos = true;
  return r;
}

// A request's output: its token ids and the bits of each token's logprob.
struct Output {
  std::vector<int32_t> ids;
  std::vector<uint32_t> logprob_bits;
  bool operator==(const Output&) const = default;
};

Output output_of(const test::Collected& c) {
  Output o;
  o.ids = c.token_ids;
  for (const StreamDelta& d : c.deltas)
    for (const TokenLogprobs& lp : d.logprobs) {
      uint32_t bits;
      std::memcpy(&bits, &lp.logprob, 4);
      o.logprob_bits.push_back(bits);
    }
  return o;
}

std::string show(const Output& o) {
  std::string s;
  for (size_t i = 0; i < o.ids.size(); ++i) {
    char buf[48];
    float f = 0.0f;
    if (i < o.logprob_bits.size()) std::memcpy(&f, &o.logprob_bits[i], 4);
    std::snprintf(buf, sizeof buf, "%d(%.9g) ", o.ids[i], double(f));
    s += buf;
  }
  return s;
}

// Runs the requests, each submitted once the engine has run `stagger[i]` steps (0: at once; a lower bound, so the
// schedule may differ from run to run, and every schedule must give the solo bits), and returns each one's output
// in order.
std::vector<Output> run_all(Engine& engine, const std::vector<EngineRequest>& requests,
                            const std::vector<int64_t>& stagger = {}) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (size_t i = 0; i < requests.size(); ++i) {
    const int64_t after = i < stagger.size() ? stagger[i] : 0;
    for (int spins = 0; engine.stats().num_steps < after && spins < 200000; ++spins) std::this_thread::yield();
    SubmitResult s = engine.submit(requests[i]);
    EXPECT_TRUE(s.status.ok()) << s.status.message;
    streams.push_back(s.stream);
  }
  std::vector<Output> out;
  for (auto& stream : streams) {
    test::Collected c = test::collect(*stream);
    EXPECT_TRUE(c.final && c.final->status.ok()) << (c.final ? c.final->status.message : "no final event");
    out.push_back(output_of(c));
  }
  return out;
}

// Prompt lengths around the block size (16) and the 24-token budget below: 17 and 33 leave one token after a
// prefix-cache hit, 25 and 49 one token after whole 24-token chunks.
const std::vector<int32_t> kPromptLens = {5, 16, 17, 25, 33, 40, 49, 64, 70};
constexpr int32_t kNewTokens = 12;

// Greedy with the chosen token's logprob (logits come back to the host: the bits of every sampled row show), or
// seeded sampling on the device (temperature, top-k, top-p, penalties; only ids come back: the draw's key is the
// request's seed and the output position, so the tokens must not move either).
enum class Mode { Greedy, Seeded };

std::vector<EngineRequest> requests(Mode mode = Mode::Greedy) {
  std::vector<EngineRequest> r;
  for (size_t i = 0; i < kPromptLens.size(); ++i) {
    EngineRequest q = greedy(prompt_of(kPromptLens[i], int32_t(i)), kNewTokens);
    if (mode == Mode::Seeded) {
      q.sampling.temperature = 0.9f, q.sampling.top_k = 40, q.sampling.top_p = 0.95f;
      q.sampling.repetition_penalty = 1.1f, q.sampling.presence_penalty = 0.3f;
      q.sampling.seed = 1000 + i, q.sampling.num_logprobs = 0;
    }
    r.push_back(std::move(q));
  }
  return r;
}

// Each request alone, on a fresh backend and engine (an empty prefix cache), one step budget big enough for any
// prompt.
std::vector<Output> solo_outputs(Mode mode = Mode::Greedy) {
  static std::map<Mode, std::vector<Output>> cache;
  if (auto it = cache.find(mode); it != cache.end()) return it->second;
  std::vector<Output> out;
  for (const EngineRequest& r : requests(mode)) {
    auto backend = make_backend(64, 128, 8, /*graphs=*/false);
    Engine engine(*backend, nullptr, engine_config(128, 8));
    out.push_back(run_all(engine, {r})[0]);
  }
  return cache[mode] = out;
}

void expect_solo(const std::vector<Output>& got, const char* how, Mode mode = Mode::Greedy) {
  const std::vector<Output> solo = solo_outputs(mode);
  ASSERT_EQ(got.size(), solo.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(solo[i].ids.size(), size_t(kNewTokens));
    EXPECT_EQ(solo[i].logprob_bits.size(), mode == Mode::Greedy ? size_t(kNewTokens) : 0u);
    EXPECT_TRUE(got[i] == solo[i]) << how << ", request " << i << " (prompt " << kPromptLens[i] << " tokens)\n  alone: "
                                  << show(solo[i]) << "\n  here:  " << show(got[i]);
  }
}

TEST(CudaEngine, NineRequestsAtOnceEachGetTheirSoloTokensAndLogprobsBitForBit) {
  REQUIRE_GPU();
  REQUIRE_INVARIANT_MATMUL();
  auto backend = make_backend(64, 128, 8);
  Engine engine(*backend, nullptr, engine_config(128, 8));
  expect_solo(run_all(engine, requests()), "all at once");
}

TEST(CudaEngine, PromptsCutIntoChunksAndStaggeredArrivalsChangeNoBits) {
  REQUIRE_GPU();
  REQUIRE_INVARIANT_MATMUL();
  // A 24-token budget: prompts go in chunks of every length beside other sequences' decodes.
  auto backend = make_backend(64, 24, 8);
  StepCounter counter(*backend);
  Engine engine(counter, nullptr, engine_config(24, 8));
  expect_solo(run_all(engine, requests(), {0, 0, 3, 5, 6, 9, 14, 20, 24}), "24-token budget, staggered");
  EXPECT_GT(counter.mixed_steps.load(), 0);
}

TEST(CudaEngine, APromptCutDownToOneTokenByTheBudgetGetsItsSoloBits) {
  REQUIRE_GPU();
  REQUIRE_INVARIANT_MATMUL();
  // Alone, each on a fresh engine with a 24-token budget: the 25- and 49-token prompts end in a one-token chunk.
  std::vector<Output> got;
  int one_token_chunks = 0;
  for (const EngineRequest& r : requests()) {
    auto backend = make_backend(64, 24, 8);
    StepCounter counter(*backend);
    Engine engine(counter, nullptr, engine_config(24, 8));
    got.push_back(run_all(engine, {r})[0]);
    one_token_chunks += counter.one_token_chunks.load();
  }
  EXPECT_EQ(one_token_chunks, 2);
  expect_solo(got, "alone, 24-token budget");
}

TEST(CudaEngine, APromptWhosePrefixIsCachedGetsItsColdTokensAndLogprobs) {
  REQUIRE_GPU();
  REQUIRE_INVARIANT_MATMUL();
  auto backend = make_backend(64, 128, 8);
  StepCounter counter(*backend);
  Engine engine(counter, nullptr, engine_config(128, 8));
  // Each request twice in a row: the second finds its prompt's full blocks cached (all but the last token's block)
  // and computes only the rest, one token when the prompt is one past a block boundary (17, 33).
  std::vector<Output> first, second;
  for (const EngineRequest& r : requests()) {
    first.push_back(run_all(engine, {r})[0]);
    second.push_back(run_all(engine, {r})[0]);
  }
  EXPECT_GT(engine.stats().num_prefix_hit_tokens, 0);
  EXPECT_EQ(counter.one_token_chunks.load(), 3);  // the second runs of the 17-, 33- and 49-token prompts
  expect_solo(first, "first run on a shared engine");
  expect_solo(second, "second run, prefix cached");
}

// A chat's next turn: the prompt is the last turn's prompt and answer plus new tokens. Its output must be what a
// cold server gives for the same prompt, whether the last turn's blocks are still in the prefix cache or not.
TEST(CudaEngine, ANextTurnGetsTheColdBitsWhetherThePreviousAnswerIsCachedOrNot) {
  REQUIRE_GPU();
  REQUIRE_INVARIANT_MATMUL();
  auto backend = make_backend(64, 128, 8);
  StepCounter counter(*backend);
  Engine engine(counter, nullptr, engine_config(128, 8));
  std::vector<EngineRequest> next;
  for (const EngineRequest& r : requests()) {
    EngineRequest turn = greedy(r.prompt_token_ids, 40);  // an answer long enough to fill whole blocks
    const Output answer = run_all(engine, {turn})[0];
    std::vector<int32_t> prompt = r.prompt_token_ids;
    prompt.insert(prompt.end(), answer.ids.begin(), answer.ids.end());
    for (int32_t t : prompt_of(7, 99)) prompt.push_back(t);
    next.push_back(greedy(prompt, kNewTokens));
  }
  const int64_t hits_before = engine.stats().num_prefix_hit_tokens;
  const std::vector<Output> warm = run_all(engine, next);
  EXPECT_GT(engine.stats().num_prefix_hit_tokens, hits_before);
  for (size_t i = 0; i < next.size(); ++i) {
    auto cold_backend = make_backend(64, 128, 8, /*graphs=*/false);
    Engine cold(*cold_backend, nullptr, engine_config(128, 8));
    const Output want = run_all(cold, {next[i]})[0];
    EXPECT_TRUE(warm[i] == want) << "turn 2 of request " << i << "\n  cold: " << show(want) << "\n  warm: "
                                 << show(warm[i]);
  }
}

TEST(CudaEngine, SeededSamplingOnTheDeviceDrawsTheSoloTokensTogetherChunkedAndPrefixCached) {
  REQUIRE_GPU();
  REQUIRE_INVARIANT_MATMUL();
  ASSERT_TRUE(make_backend(8, 16, 2)->samples_on_device());
  auto backend = make_backend(64, 24, 8);
  StepCounter counter(*backend);
  Engine engine(counter, nullptr, engine_config(24, 8));
  expect_solo(run_all(engine, requests(Mode::Seeded)), "seeded, all at once, 24-token budget", Mode::Seeded);
  expect_solo(run_all(engine, requests(Mode::Seeded)), "seeded, again: prefixes cached", Mode::Seeded);
  EXPECT_GT(counter.device_samples.load(), 0);
  EXPECT_GT(counter.one_token_chunks.load(), 0);
}

// Asking for logprobs brings a step's logits back to the host, whose sampler then draws: the same tokens as the
// device's sampler, greedy (the same argmax, ties included) and seeded (the same draw key and arithmetic).
TEST(CudaEngine, TheHostAndDeviceSamplersDrawTheSameTokens) {
  REQUIRE_GPU();
  REQUIRE_INVARIANT_MATMUL();
  for (const Mode mode : {Mode::Greedy, Mode::Seeded}) {
    std::vector<EngineRequest> on_host = requests(mode), on_device = requests(mode);
    for (EngineRequest& r : on_host) r.sampling.num_logprobs = 2;
    for (EngineRequest& r : on_device) r.sampling.num_logprobs = 0;
    auto backend = make_backend(64, 128, 8);
    StepCounter counter(*backend);
    Engine engine(counter, nullptr, engine_config(128, 8));
    const std::vector<Output> host = run_all(engine, on_host);
    const int device_before = counter.device_samples.load();
    const std::vector<Output> device = run_all(engine, on_device);
    EXPECT_GT(counter.device_samples.load(), device_before);
    for (size_t i = 0; i < host.size(); ++i)
      EXPECT_EQ(host[i].ids, device[i].ids) << (mode == Mode::Greedy ? "greedy" : "seeded") << " request " << i;
  }
}

// flint-run's OfflineRunner marks its feeds as the scheduler does: a prompt fed in 24-token chunks (the 25- and
// 49-token ones end in a chunk of one) gives the logits of one whole chunk, bit for bit, and so do the decodes after.
TEST(CudaOfflineRunner, APromptFedInChunksGivesTheLogitsOfOneChunkBitForBit) {
  REQUIRE_GPU();
  REQUIRE_INVARIANT_MATMUL();
  auto backend = make_backend(64, 128, 8);
  for (const EngineRequest& r : requests()) {
    std::vector<std::vector<float>> rows[2];
    for (const int32_t chunk : {128, 24}) {
      OfflineRunner runner(*backend, chunk);
      std::vector<float> logits = runner.feed(r.prompt_token_ids);
      for (int i = 0; i < 4; ++i) {
        rows[chunk == 24].push_back(logits);
        const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        logits = runner.feed(std::vector<int32_t>{next});
      }
    }
    for (size_t i = 0; i < rows[0].size(); ++i)
      EXPECT_EQ(0, std::memcmp(rows[0][i].data(), rows[1][i].data(), rows[0][i].size() * sizeof(float)))
          << "prompt of " << r.prompt_token_ids.size() << " tokens, row " << i;
  }
}

TEST(CudaEngine, PreemptedRequestsStillEndWithTheirFullLength) {
  REQUIRE_GPU();
  // 7 blocks of 16 slots for 8 requests of up to 82 tokens (6 blocks alone): sequences are preempted and recomputed.
  auto backend = make_backend(7, 64, 8);
  Engine engine(*backend, nullptr, engine_config(64, 8));
  const std::vector<Output> got = run_all(engine, requests());
  for (const Output& o : got) EXPECT_EQ(o.ids.size(), size_t(kNewTokens));
  EXPECT_GT(engine.stats().num_preempted, 0);
}

}  // namespace
}  // namespace flint
