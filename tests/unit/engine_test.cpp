// Engine tests on the tiny model with the CPU backend: streamed tokens equal the
// solo run (also under chunking and preemption), seeds, stop rules, cancel,
// deadlines, rejections, shutdown, text deltas and priority preemption.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

#include "common/error.h"
#include "engine/offline_runner.h"
#include "model/cpu_backend.h"
#include "model/model_loader.h"
#include "engine_test_util.h"

namespace flint {
namespace {

using namespace std::chrono_literals;

const LoadedModel& tiny() {
  static const LoadedModel model = load_model(FLINT_TEST_DATA_DIR "/tiny-llama");
  return model;
}
const Tokenizer* tiny_tokenizer() { return &*tiny().tokenizer; }

CpuBackend make_backend(int32_t num_kv_blocks) {
  return CpuBackend(tiny().config, tiny().weights, {.num_kv_blocks = num_kv_blocks, .block_size = 16, .num_threads = 2});
}

// Ids below the special tokens (507..511 in the tiny vocabulary).
std::vector<int32_t> prompt_of(int32_t len, int32_t salt = 0) {
  std::vector<int32_t> p;
  for (int32_t i = 0; i < len; ++i) p.push_back((len * 131 + i * 17 + salt * 7) % 500);
  return p;
}

std::vector<int32_t> solo_greedy(const std::vector<int32_t>& prompt, int32_t num_tokens) {
  CpuBackend backend = make_backend(32);
  OfflineRunner runner(backend);
  std::vector<float> logits = runner.feed(prompt);
  std::vector<int32_t> out;
  for (int32_t i = 0; i < num_tokens; ++i) {
    out.push_back(int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    if (i + 1 < num_tokens) logits = runner.feed(std::vector<int32_t>{out.back()});
  }
  return out;
}

EngineRequest greedy_request(std::vector<int32_t> prompt, int32_t max_tokens) {
  EngineRequest r;
  r.prompt_token_ids = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.stopping.max_tokens = max_tokens;
  r.stopping.ignore_eos = true;
  return r;
}

using test::collect;
using test::Collected;

std::shared_ptr<RequestStream> submit_ok(Engine& engine, EngineRequest request) {
  SubmitResult result = engine.submit(std::move(request));
  EXPECT_TRUE(result.status.ok()) << result.status.message;
  return result.stream;
}

using test::GatedBackend;

TEST(Engine, ARequestStreamsTheSameGreedyTokensAsOfflineRunnerAlone) {
  const std::vector<int32_t> prompt = prompt_of(12);
  CpuBackend backend = make_backend(32);
  Engine engine(backend, tiny_tokenizer());
  Collected got = collect(*submit_ok(engine, greedy_request(prompt, 10)));
  EXPECT_EQ(got.token_ids, solo_greedy(prompt, 10));
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->reason, FinishReason::Length);
  EXPECT_EQ(got.num_deltas, 10);
}

TEST(Engine, EightConcurrentRequestsEachGetExactlyTheirSoloTokens) {
  // 8 blocks of 16 hold 128 tokens of the 377 the eight finish with; 24 tokens a step.
  CpuBackend backend = make_backend(8);
  Engine engine(backend, tiny_tokenizer(), {.scheduler = {.max_num_seqs = 8, .max_num_batched_tokens = 24}});
  const std::vector<int32_t> lens = {5, 20, 37, 50, 70, 9, 30, 44}, budgets = {16, 12, 20, 8, 16, 10, 24, 6};
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (size_t i = 0; i < lens.size(); ++i)
    streams.push_back(submit_ok(engine, greedy_request(prompt_of(lens[i], int32_t(i)), budgets[i])));
  for (size_t i = 0; i < lens.size(); ++i) {
    Collected got = collect(*streams[i]);
    EXPECT_EQ(got.token_ids, solo_greedy(prompt_of(lens[i], int32_t(i)), budgets[i])) << "request " << i;
    ASSERT_TRUE(got.final);
    EXPECT_EQ(got.final->reason, FinishReason::Length);
  }
  const EngineStats stats = engine.stats();
  EXPECT_GT(stats.num_preempted, 0);
  EXPECT_EQ(stats.num_free_blocks, stats.num_blocks);
}

TEST(Engine, SameSeedSameTokensWithTemperatureSampling) {
  CpuBackend backend = make_backend(32);
  Engine engine(backend, tiny_tokenizer());
  auto sampled = [](uint64_t seed, int32_t salt) {
    EngineRequest r = greedy_request(prompt_of(10, salt), 16);
    r.sampling = {.temperature = 0.9f, .top_p = 0.95f, .repetition_penalty = 1.1f, .seed = seed};
    return r;
  };
  auto a = submit_ok(engine, sampled(42, 0));
  auto other = submit_ok(engine, sampled(7, 3));
  auto b = submit_ok(engine, sampled(42, 0));
  const Collected got_a = collect(*a), got_b = collect(*b);
  collect(*other);
  EXPECT_EQ(got_a.token_ids.size(), 16u);
  EXPECT_EQ(got_a.token_ids, got_b.token_ids);
}

TEST(Engine, MaxTokensEndsWithFinishReasonLengthAndUsageCounts) {
  CpuBackend backend = make_backend(32);
  Engine engine(backend, tiny_tokenizer());
  Collected got = collect(*submit_ok(engine, greedy_request(prompt_of(9), 5)));
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->reason, FinishReason::Length);
  EXPECT_TRUE(got.final->status.ok());
  EXPECT_EQ(got.token_ids.size(), 5u);
  EXPECT_EQ(got.final->usage.prompt_tokens, 9);
  EXPECT_EQ(got.final->usage.completion_tokens, 5);
  EXPECT_EQ(got.final->usage.cached_prompt_tokens, 0);
  ASSERT_TRUE(got.final->timings.time_to_first_token);
  EXPECT_LE(got.final->timings.queued, *got.final->timings.time_to_first_token);
  EXPECT_LE(*got.final->timings.time_to_first_token, got.final->timings.total);
}

// 4 blocks of 16: a low-priority runner of 20 + 40 tokens holds 2 blocks when a
// 40-token request that needs 3 arrives (held at the gate until then).
struct PriorityRun {
  Collected low, arrival;
  int64_t num_preempted = 0;
};
PriorityRun run_low_then_arrival(int32_t arrival_priority) {
  CpuBackend backend = make_backend(4);
  GatedBackend gated(backend);
  gated.set_open(false);
  Engine engine(gated, tiny_tokenizer());
  auto low = submit_ok(engine, greedy_request(prompt_of(20, 1), 40));
  EXPECT_TRUE(gated.wait_entered(1));  // low's prefill is in the forward pass
  EngineRequest r = greedy_request(prompt_of(40, 2), 5);
  r.priority = arrival_priority;
  auto arrival = submit_ok(engine, std::move(r));
  gated.set_open(true);
  PriorityRun run;
  run.arrival = collect(*arrival);
  run.low = collect(*low);
  run.num_preempted = engine.stats().num_preempted;
  return run;
}

TEST(Engine, AHigherPriorityArrivalPreemptsTheLowPriorityRunnerWhichStillFinishesWithItsSoloTokens) {
  const PriorityRun run = run_low_then_arrival(/*arrival_priority=*/5);
  EXPECT_EQ(run.num_preempted, 1);
  EXPECT_EQ(run.arrival.token_ids, solo_greedy(prompt_of(40, 2), 5));
  EXPECT_EQ(run.low.token_ids, solo_greedy(prompt_of(20, 1), 40));
  ASSERT_TRUE(run.low.final && run.arrival.final);
  EXPECT_EQ(run.low.final->reason, FinishReason::Length);
  EXPECT_LT(run.arrival.final->timings.total, run.low.final->timings.total);
}

TEST(Engine, AnEqualPriorityArrivalWaitsForTheRunnerAndPreemptsNothing) {
  const PriorityRun run = run_low_then_arrival(/*arrival_priority=*/0);
  EXPECT_EQ(run.num_preempted, 0);
  EXPECT_EQ(run.arrival.token_ids, solo_greedy(prompt_of(40, 2), 5));
  EXPECT_EQ(run.low.token_ids, solo_greedy(prompt_of(20, 1), 40));
}

TEST(Engine, StopTokenIdEndsWithStop) {
  const std::vector<int32_t> prompt = prompt_of(11);
  const std::vector<int32_t> solo = solo_greedy(prompt, 8);
  const size_t first = size_t(std::find(solo.begin(), solo.end(), solo[3]) - solo.begin());
  CpuBackend backend = make_backend(32);
  Engine engine(backend, tiny_tokenizer());
  EngineRequest r = greedy_request(prompt, 8);
  r.stopping.stop_token_ids = {solo[3]};
  Collected got = collect(*submit_ok(engine, std::move(r)));
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->reason, FinishReason::Stop);
  EXPECT_EQ(got.token_ids, std::vector<int32_t>(solo.begin(), solo.begin() + long(first)));  // the stop token is not emitted
  EXPECT_EQ(got.final->usage.completion_tokens, int32_t(first) + 1);
}

TEST(Engine, StopStringIsNotEmittedAndTextBeforeItIs) {
  CpuBackend backend = make_backend(32);
  Engine engine(backend, tiny_tokenizer());
  const std::vector<int32_t> prompt = prompt_of(13);
  const std::string full = collect(*submit_ok(engine, greedy_request(prompt, 16))).text;
  ASSERT_GE(full.size(), 6u) << "the tiny model's greedy text is too short to pick a stop string from";
  // Three bytes from the middle, starting and ending on UTF-8 character boundaries.
  size_t begin = full.size() / 2, end = begin + 3;
  while (begin > 0 && (full[begin] & 0xC0) == 0x80) --begin;
  while (end < full.size() && (full[end] & 0xC0) == 0x80) ++end;
  const std::string stop = full.substr(begin, end - begin);
  EngineRequest r = greedy_request(prompt, 16);
  r.stopping.stop = {"never in this text \x01", stop};
  Collected got = collect(*submit_ok(engine, std::move(r)));
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->reason, FinishReason::Stop);
  EXPECT_EQ(got.final->matched_stop, stop);
  EXPECT_EQ(got.text, full.substr(0, full.find(stop)));
}

TEST(Engine, CancelledRequestEndsWithCancelledAndFreesItsBlocks) {
  CpuBackend backend = make_backend(32);
  GatedBackend gated(backend);
  Engine engine(gated, tiny_tokenizer());
  auto stream = submit_ok(engine, greedy_request(prompt_of(40), 400));
  ASSERT_TRUE(stream->pop(60s).has_value());  // its first token: it holds blocks now
  gated.set_open(false);  // holds it mid-generation until the cancel is queued
  engine.cancel(stream->id());
  gated.set_open(true);
  Collected got = collect(*stream);
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->reason, FinishReason::Cancelled);
  EXPECT_EQ(got.final->status.code, StatusCode::Cancelled);
  EXPECT_LT(got.final->usage.completion_tokens, 400);
  const EngineStats stats = engine.stats();
  EXPECT_EQ(stats.num_free_blocks, stats.num_blocks);
  EXPECT_EQ(stats.num_running + stats.num_waiting, 0);
}

TEST(Engine, DeadlineInThePastEndsWithDeadlineExceeded) {
  CpuBackend backend = make_backend(32);
  Engine engine(backend, tiny_tokenizer());
  EngineRequest r = greedy_request(prompt_of(8), 8);
  r.deadline = Clock::now() - 1s;
  Collected got = collect(*submit_ok(engine, std::move(r)));
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->reason, FinishReason::Deadline);
  EXPECT_EQ(got.final->status.code, StatusCode::DeadlineExceeded);
  EXPECT_EQ(got.num_deltas, 0);
  EXPECT_EQ(engine.stats().num_free_blocks, engine.stats().num_blocks);
}

TEST(Engine, PromptOverCapacityIsRejectedWithInvalidArgumentAndNothingElseIsAffected) {
  CpuBackend backend = make_backend(8);  // 128 tokens a sequence
  Engine engine(backend, tiny_tokenizer());
  EXPECT_EQ(engine.max_num_tokens_per_seq(), 128);
  SubmitResult over = engine.submit(greedy_request(prompt_of(120), 16));
  EXPECT_EQ(over.status.code, StatusCode::InvalidArgument);
  EXPECT_NE(over.status.message.find("capacity of 128 tokens"), std::string::npos) << over.status.message;
  EXPECT_EQ(over.stream, nullptr);
  EXPECT_EQ(engine.submit(greedy_request({}, 4)).status.code, StatusCode::InvalidArgument);
  EngineRequest bad = greedy_request(prompt_of(4), 4);
  bad.sampling.top_p = 0.0f;
  SubmitResult bad_result = engine.submit(bad);
  EXPECT_EQ(bad_result.status.code, StatusCode::InvalidArgument);
  EXPECT_NE(bad_result.status.message.find("top_p"), std::string::npos);
  EXPECT_EQ(engine.stats().num_steps, 0);
  const std::vector<int32_t> prompt = prompt_of(120);
  EXPECT_EQ(collect(*submit_ok(engine, greedy_request(prompt, 8))).token_ids, solo_greedy(prompt, 8));
}

TEST(Engine, FullQueueRejectsWithResourceExhausted) {
  CpuBackend backend = make_backend(32);
  GatedBackend gated(backend);
  gated.set_open(false);
  EngineConfig config;
  config.max_num_waiting = 2;
  Engine engine(gated, tiny_tokenizer(), config);
  auto running = submit_ok(engine, greedy_request(prompt_of(6), 3));
  ASSERT_TRUE(gated.wait_entered(1));  // the engine thread is inside its step; the next two wait
  auto second = submit_ok(engine, greedy_request(prompt_of(7), 3));
  auto third = submit_ok(engine, greedy_request(prompt_of(8), 3));
  SubmitResult refused = engine.submit(greedy_request(prompt_of(9), 3));
  EXPECT_EQ(refused.status.code, StatusCode::ResourceExhausted);
  EXPECT_EQ(refused.stream, nullptr);
  gated.set_open(true);
  for (auto* stream : {&running, &second, &third}) {
    Collected got = collect(**stream);
    ASSERT_TRUE(got.final);
    EXPECT_EQ(got.final->reason, FinishReason::Length);
  }
}

TEST(Engine, ShutdownEndsOutstandingRequestsWithUnavailable) {
  CpuBackend backend = make_backend(32);
  GatedBackend gated(backend);
  gated.set_open(false);
  Engine engine(gated, tiny_tokenizer());
  auto running = submit_ok(engine, greedy_request(prompt_of(6), 50));
  ASSERT_TRUE(gated.wait_entered(1));
  auto queued = submit_ok(engine, greedy_request(prompt_of(7), 50));
  std::thread stopper([&] { engine.shutdown(); });
  while (engine.alive()) std::this_thread::yield();  // the stop is requested: let the step end
  gated.set_open(true);
  stopper.join();
  for (auto* stream : {&running, &queued}) {
    Collected got = collect(**stream);
    ASSERT_TRUE(got.final);
    EXPECT_EQ(got.final->reason, FinishReason::Error);
    EXPECT_EQ(got.final->status.code, StatusCode::Unavailable);
  }
  EXPECT_EQ(engine.submit(greedy_request(prompt_of(6), 4)).status.code, StatusCode::Unavailable);
}

// Throws from its first forward, then runs normally.
class FailOnceBackend : public Backend {
 public:
  explicit FailOnceBackend(Backend& inner) : inner_(inner) {}
  void forward(const StepPlan& plan, float* logits) override {
    if (!failed_) {
      failed_ = true;
      throw Error("device lost");
    }
    inner_.forward(plan, logits);
  }
  const ModelConfig& config() const override { return inner_.config(); }
  int32_t block_size() const override { return inner_.block_size(); }
  int32_t num_kv_blocks() const override { return inner_.num_kv_blocks(); }

 private:
  Backend& inner_;
  bool failed_ = false;  // engine thread only
};

TEST(Engine, AFailedStepEndsItsRequestsWithInternalAndTheEngineServesOn) {
  CpuBackend backend = make_backend(32);
  FailOnceBackend failing(backend);
  Engine engine(failing, tiny_tokenizer());
  Collected failed = collect(*submit_ok(engine, greedy_request(prompt_of(8), 4)));
  ASSERT_TRUE(failed.final);
  EXPECT_EQ(failed.final->reason, FinishReason::Error);
  EXPECT_EQ(failed.final->status.code, StatusCode::Internal);
  EXPECT_NE(failed.final->status.message.find("device lost"), std::string::npos);
  EXPECT_EQ(engine.stats().num_free_blocks, engine.stats().num_blocks);
  const std::vector<int32_t> prompt = prompt_of(9);
  EXPECT_EQ(collect(*submit_ok(engine, greedy_request(prompt, 4))).token_ids, solo_greedy(prompt, 4));
}

// Runs normally for `good_steps` steps, then every forward throws and the backend reports itself unusable (as
// CudaBackend does after a kernel fault poisons the CUDA context).
class FaultsForGoodBackend : public Backend {
 public:
  FaultsForGoodBackend(Backend& inner, int good_steps) : inner_(inner), good_steps_(good_steps) {}
  void forward(const StepPlan& plan, float* logits) override {
    if (steps_++ >= good_steps_) {
      fatal_ = "cudaErrorIllegalAddress (an illegal memory access was encountered)";
      throw Error("cuda backend: the forward step: " + fatal_);
    }
    inner_.forward(plan, logits);
  }
  std::string fatal_error() const override { return fatal_; }
  const ModelConfig& config() const override { return inner_.config(); }
  int32_t block_size() const override { return inner_.block_size(); }
  int32_t num_kv_blocks() const override { return inner_.num_kv_blocks(); }

 private:
  Backend& inner_;
  int good_steps_, steps_ = 0;  // engine thread only
  std::string fatal_;
};

TEST(Engine, AFatalBackendErrorEndsEveryRequestWithUnavailableAndTheEngineStopsRefusingNewOnes) {
  CpuBackend backend = make_backend(32);
  FaultsForGoodBackend faulty(backend, 6);
  Engine engine(faulty, tiny_tokenizer());
  ASSERT_TRUE(engine.alive());
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 3; ++i) streams.push_back(submit_ok(engine, greedy_request(prompt_of(8 + i, i), 40)));
  for (auto& stream : streams) {
    Collected got = collect(*stream);
    ASSERT_TRUE(got.final);
    EXPECT_EQ(got.final->reason, FinishReason::Error);
    EXPECT_EQ(got.final->status.code, StatusCode::Unavailable);
    EXPECT_NE(got.final->status.message.find("cudaErrorIllegalAddress"), std::string::npos) << got.final->status.message;
    EXPECT_LT(got.token_ids.size(), 40u);
  }
  EXPECT_FALSE(engine.alive());
  EXPECT_NE(engine.fatal_error().find("can run no more steps"), std::string::npos) << engine.fatal_error();
  SubmitResult later = engine.submit(greedy_request(prompt_of(5), 4));
  EXPECT_EQ(later.status.code, StatusCode::Unavailable);
  EXPECT_NE(later.status.message.find("cudaErrorIllegalAddress"), std::string::npos) << later.status.message;
  EXPECT_EQ(later.stream, nullptr);
}

TEST(Engine, AStepThatFailsWithoutAFatalErrorLeavesTheEngineAlive) {
  CpuBackend backend = make_backend(32);
  FailOnceBackend failing(backend);
  Engine engine(failing, tiny_tokenizer());
  collect(*submit_ok(engine, greedy_request(prompt_of(8), 4)));
  EXPECT_TRUE(engine.alive());
  EXPECT_EQ(engine.fatal_error(), "");
}

TEST(Engine, WithoutATokenizerIdsStreamWithNoTextAndStopStringsAreRejected) {
  CpuBackend backend = make_backend(32);
  Engine engine(backend, /*tokenizer=*/nullptr);
  const std::vector<int32_t> prompt = prompt_of(10);
  EngineRequest with_stop = greedy_request(prompt, 4);
  with_stop.stopping.stop = {"x"};
  EXPECT_EQ(engine.submit(with_stop).status.code, StatusCode::InvalidArgument);
  Collected got = collect(*submit_ok(engine, greedy_request(prompt, 6)));
  EXPECT_EQ(got.token_ids, solo_greedy(prompt, 6));
  EXPECT_TRUE(got.text.empty());
}

TEST(Engine, ConcatenatedTextDeltasEqualDecodingAllOutputTokens) {
  CpuBackend backend = make_backend(32);
  Engine engine(backend, tiny_tokenizer());
  EngineRequest r = greedy_request(prompt_of(10), 40);
  r.sampling = {.temperature = 1.0f, .seed = 7};
  Collected got = collect(*submit_ok(engine, std::move(r)));
  ASSERT_EQ(got.token_ids.size(), 40u);
  EXPECT_EQ(got.text, tiny_tokenizer()->decode(got.token_ids, /*skip_special=*/true));
  EXPECT_FALSE(got.text.empty());
}

}  // namespace
}  // namespace flint
