// Reading one Generate or Chat stream to its end: deltas handed over as they
// arrive, the Finished message, the final status, and client-side timing.
#pragma once
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>

#include "client/stats.h"
#include "flint/v1/inference.grpc.pb.h"

namespace flint::client {

using Clock = std::chrono::steady_clock;

// Milliseconds from t0 to t.
inline double ms_between(Clock::time_point t0, Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(t - t0).count();
}

struct StreamOutcome {
  // Not OK: the server's status, or a broken contract (deltas after Finished,
  // OK without Finished) reported as INTERNAL by the client.
  grpc::Status status;
  std::optional<v1::Finished> finished;
  TokenTimeline timeline;  // on the clock of ms_between(start, ·)
  double total_ms = 0;     // from start to the stream's status
};

using DeltaHandler = std::function<void(const v1::Delta&)>;

// Reads the reader's stream until its status. start: when the call was made.
StreamOutcome read_stream(grpc::ClientReaderInterface<v1::GenerateResponse>& reader,
                          Clock::time_point start, const DeltaHandler& on_delta);

}  // namespace flint::client
