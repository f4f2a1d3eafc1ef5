// The engine's metric names, help texts and histogram buckets.
#include "engine/engine_metrics.h"

namespace flint {

EngineMetrics EngineMetrics::create(metrics::Registry& registry) {
  EngineMetrics m;
  // Buckets span a GPU's milliseconds and a CPU's long prefills.
  m.time_to_first_token = &registry
      .histogram("flint_time_to_first_token_seconds",
                 "Time from a request's submission to its first generated token (queueing and prefill included).",
                 {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60})
      .get();
  m.inter_token_latency = &registry
      .histogram("flint_inter_token_latency_seconds",
                 "Time between two consecutive generated tokens of one sequence (decode step time, "
                 "preemption and recompute included).",
                 {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5})
      .get();
  m.request_duration = &registry
      .histogram("flint_request_duration_seconds",
                 "Time from a request's submission to the engine to its final event, whatever the outcome.",
                 {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600})
      .get();
  m.queue_time = &registry
      .histogram("flint_request_queue_seconds",
                 "Time from a request's submission to its first scheduled step (requests that ran).",
                 {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60})
      .get();
  m.prompt_tokens = &registry.counter("flint_prompt_tokens_total", "Prompt tokens of the requests the engine admitted.").get();
  m.generation_tokens = &registry
      .counter("flint_generation_tokens_total",
               "Tokens generated (every output token: sampled ones and forced reasoning end markers).")
      .get();
  m.rate_ = std::make_shared<metrics::WindowedRate>(10);
  m.generation_rate = m.rate_.get();
  registry.callback("flint_generation_tokens_per_second",
                    "Tokens generated per second over the last 10 whole seconds.", metrics::Type::Gauge,
                    [rate = m.rate_] { return rate->rate(); });
  return m;
}

}  // namespace flint
