// EngineMetrics: what the engine records while it runs (per-token and per-request
// latencies, tokens), into metrics a registry owns; flintd serves them at /metrics.
// Timing is taken here because every front end (gRPC, HTTP) goes through the engine.
#pragma once
#include <memory>

#include "common/metrics.h"

namespace flint {

struct EngineMetrics {
  metrics::Histogram* time_to_first_token = nullptr;  // s, submit to the first sampled token
  metrics::Histogram* inter_token_latency = nullptr;  // s, between two sampled tokens of one sequence
  metrics::Histogram* request_duration = nullptr;     // s, submit to the final event, every admitted request
  metrics::Histogram* queue_time = nullptr;           // s, submit to first scheduled
  metrics::Counter* prompt_tokens = nullptr;          // prompt tokens of admitted requests
  metrics::Counter* generation_tokens = nullptr;      // output tokens (sampled, and forced think_end ids)
  metrics::WindowedRate* generation_rate = nullptr;   // the same tokens, per second over a window

  // Adds the flint_* families above to `registry` (owned there: it must outlive
  // every engine that records into them); the rate window is owned by the result.
  static EngineMetrics create(metrics::Registry& registry);

 private:
  std::shared_ptr<metrics::WindowedRate> rate_;
};

}  // namespace flint
