// One stream read to its end, checked against the contract in inference.proto:
// Deltas, then exactly one Finished, then OK.
#include "client/stream.h"

namespace flint::client {

StreamOutcome read_stream(grpc::ClientReaderInterface<v1::GenerateResponse>& reader,
                          Clock::time_point start, const DeltaHandler& on_delta) {
  StreamOutcome out{.status = {}, .finished = {}, .timeline = TokenTimeline(0.0)};
  std::optional<grpc::Status> broken;
  v1::GenerateResponse msg;
  while (reader.Read(&msg)) {
    if (out.finished && !broken)
      broken = grpc::Status(grpc::StatusCode::INTERNAL, "client: the server sent a message after Finished");
    if (msg.has_delta()) {
      out.timeline.on_delta(ms_between(start, Clock::now()), msg.delta().token_ids_size());
      if (on_delta) on_delta(msg.delta());
    } else if (msg.has_finished()) {
      out.finished = msg.finished();
    }
  }
  out.status = reader.Finish();
  out.total_ms = ms_between(start, Clock::now());
  if (out.status.ok() && broken) out.status = *broken;
  if (out.status.ok() && !out.finished)
    out.status = grpc::Status(grpc::StatusCode::INTERNAL, "client: the stream ended OK without a Finished message");
  return out;
}

}  // namespace flint::client
