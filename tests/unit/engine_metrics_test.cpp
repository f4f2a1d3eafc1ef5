// What the engine records into EngineMetrics (tiny model, CPU backend): one time
// to first token per request, an inter-token latency per later token, a duration
// per request whatever its end, tokens matching the usage; and the waiting count
// that flint_queue_depth reads, submissions the engine thread has not taken yet included.
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "engine/engine.h"
#include "engine/engine_metrics.h"
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

CpuBackend make_backend(int32_t num_kv_blocks) {
  return CpuBackend(tiny().config, tiny().weights, {.num_kv_blocks = num_kv_blocks, .block_size = 16, .num_threads = 2});
}

EngineRequest greedy_request(int32_t prompt_len, int32_t max_tokens, int32_t salt = 0) {
  EngineRequest r;
  for (int32_t i = 0; i < prompt_len; ++i) r.prompt_token_ids.push_back((prompt_len * 131 + i * 17 + salt * 7) % 500);
  r.sampling.temperature = 0.0f;
  r.stopping.max_tokens = max_tokens;
  r.stopping.ignore_eos = true;
  return r;
}

using test::GatedBackend;

uint64_t count_of(const metrics::Histogram* h) { return h->snapshot().count; }

TEST(EngineMetrics, EachRequestRecordsOneFirstTokenLatencyAndOneInterTokenLatencyPerLaterToken) {
  metrics::Registry registry;
  const EngineMetrics m = EngineMetrics::create(registry);
  CpuBackend backend = make_backend(32);
  EngineConfig config;
  config.metrics = &m;
  Engine engine(backend, &*tiny().tokenizer, config);
  const std::vector<std::pair<int32_t, int32_t>> shapes = {{9, 5}, {12, 3}, {7, 1}};  // prompt, max_tokens
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (size_t i = 0; i < shapes.size(); ++i) {
    SubmitResult r = engine.submit(greedy_request(shapes[i].first, shapes[i].second, int32_t(i)));
    ASSERT_TRUE(r.status.ok()) << r.status.message;
    streams.push_back(r.stream);
  }
  int32_t prompt = 0, completion = 0;
  double ttft_sum = 0;
  for (auto& s : streams) {
    const test::Collected got = test::collect(*s);
    ASSERT_TRUE(got.final && got.final->status.ok());
    prompt += got.final->usage.prompt_tokens;
    completion += got.final->usage.completion_tokens;
    ttft_sum += std::chrono::duration<double>(*got.final->timings.time_to_first_token).count();
  }
  EXPECT_EQ(count_of(m.time_to_first_token), 3u);
  EXPECT_EQ(count_of(m.inter_token_latency), 4u + 2u + 0u);
  EXPECT_EQ(count_of(m.request_duration), 3u);
  EXPECT_EQ(count_of(m.queue_time), 3u);
  // The same instants as the final events' timings.
  EXPECT_NEAR(m.time_to_first_token->snapshot().sum, ttft_sum, 1e-6);
  EXPECT_EQ(prompt, 9 + 12 + 7);
  EXPECT_EQ(completion, 5 + 3 + 1);
  EXPECT_EQ(m.prompt_tokens->value(), double(prompt));
  EXPECT_EQ(m.generation_tokens->value(), double(completion));
  // Every token was generated within the last few seconds, and the window is 10 s long.
  const double rate = m.generation_rate->rate(Clock::now() + 1s);
  EXPECT_GE(rate, completion / 10.0 - 1e-9);
  EXPECT_LE(rate, completion / 10.0 + 1e-9);
  const EngineStats stats = engine.stats();
  EXPECT_EQ(stats.num_prefix_query_tokens, prompt);  // no preemption: each prompt looked up once
  EXPECT_EQ(stats.num_prefix_hit_tokens, 0);
  EXPECT_EQ(stats.num_free_blocks, stats.num_blocks);
}

TEST(EngineMetrics, ACancelledRequestCountsItsDurationAndTheTokensItGot) {
  metrics::Registry registry;
  const EngineMetrics m = EngineMetrics::create(registry);
  CpuBackend backend = make_backend(32);
  GatedBackend gated(backend);
  gated.set_open(false);
  EngineConfig config;
  config.metrics = &m;
  Engine engine(gated, &*tiny().tokenizer, config);
  SubmitResult r = engine.submit(greedy_request(9, 50));
  ASSERT_TRUE(r.status.ok());
  ASSERT_TRUE(gated.wait_entered(1));  // the prefill is in the forward pass
  engine.cancel(r.stream->id());
  gated.set_open(true);
  const test::Collected got = test::collect(*r.stream);
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->reason, FinishReason::Cancelled);
  EXPECT_EQ(count_of(m.request_duration), 1u);
  EXPECT_EQ(m.generation_tokens->value(), double(got.final->usage.completion_tokens));
  EXPECT_EQ(count_of(m.time_to_first_token), got.final->usage.completion_tokens > 0 ? 1u : 0u);
}

TEST(EngineMetrics, SubmissionsWaitingBehindABusyStepCountAsWaitingBeforeTheEngineTakesThem) {
  CpuBackend backend = make_backend(32);
  GatedBackend gated(backend);
  gated.set_open(false);
  Engine engine(gated, &*tiny().tokenizer);
  SubmitResult first = engine.submit(greedy_request(9, 2));
  ASSERT_TRUE(first.status.ok());
  ASSERT_TRUE(gated.wait_entered(1));  // the engine thread is inside the first step
  SubmitResult second = engine.submit(greedy_request(10, 2, 1));
  SubmitResult third = engine.submit(greedy_request(11, 2, 2));
  ASSERT_TRUE(second.status.ok() && third.status.ok());
  EngineStats stats = engine.stats();
  EXPECT_EQ(stats.num_submitted, 2);
  EXPECT_EQ(stats.num_waiting, 0);
  EXPECT_EQ(stats.num_running, 1);
  gated.set_open(true);
  for (auto* s : {&first, &second, &third}) ASSERT_TRUE(test::collect(*s->stream).final);
  stats = engine.stats();
  EXPECT_EQ(stats.num_submitted + stats.num_waiting + stats.num_running, 0);
}

}  // namespace
}  // namespace flint
