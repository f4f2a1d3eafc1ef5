// InferenceService: flint.v1.Inference over gRPC's callback API. Every method is
// registered raw (bytes in, bytes out) so that a request that does not parse (a
// string that is not UTF-8, say) gets INVALID_ARGUMENT naming the field, not
// gRPC's generic INTERNAL. Streams are fed by the engine through RequestStream's
// listener: no thread per call.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>

#include <grpcpp/grpcpp.h>

#include "engine/engine.h"
#include "flint/v1/inference.grpc.pb.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/request_prep.h"

namespace flint::server {

// The engine's status codes as gRPC's.
grpc::StatusCode to_grpc(StatusCode code);

// What Generate (Request = v1::GenerateRequest) and Chat (v1::ChatRequest) do with a
// call's bytes before the engine sees them: parse (INVALID_ARGUMENT naming a string
// field that is not UTF-8, or malformed bytes), then prepare_generate / prepare_chat
// (the tokenizer refusing its input is INVALID_ARGUMENT too). fuzz/ calls it as is.
template <class Request>
grpc::Status parse_and_prepare(const grpc::ByteBuffer& request_bytes, const ServedModel& model,
                               PreparedRequest& prepared);

class InferenceService final
    : public v1::Inference::WithRawCallbackMethod_Generate<v1::Inference::WithRawCallbackMethod_Chat<
          v1::Inference::WithRawCallbackMethod_Tokenize<v1::Inference::WithRawCallbackMethod_Detokenize<
              v1::Inference::WithRawCallbackMethod_GetModelInfo<
                  v1::Inference::WithRawCallbackMethod_GetServerStats<v1::Inference::Service>>>>>> {
 public:
  // `engine` and what `model` points to must outlive the service. `log_requests`:
  // one line per finished stream on stderr.
  InferenceService(Engine& engine, const ServedModel& model, v1::ModelInfo info, bool log_requests);

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Chat(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetServerStats(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;

  // From now on new calls get UNAVAILABLE; calls already streaming go on.
  void start_draining() { draining_ = true; }
  bool draining() const { return draining_.load(); }
  // Generate and Chat calls not yet done.
  int64_t num_active_streams() const { return active_streams_.load(); }
  // Requests open on other front ends (HTTP), for GetServerStats. Set before serving.
  void set_other_open_requests(std::function<int64_t()> count) { other_open_requests_ = std::move(count); }
  // Every method then needs "authorization: Bearer <key>" metadata naming one of
  // `keys` (UNAUTHENTICATED otherwise), and streams count against its limit. Set
  // before serving; `keys` must outlive the service.
  void set_api_keys(ApiKeys* keys) { api_keys_ = keys; }
  // Where Generate and Chat calls are counted as they end (null: not counted). Set before serving.
  void set_request_metrics(RequestMetrics* metrics) { request_metrics_ = metrics; }

 private:
  class StreamReactor;
  // The caller's key when keys are required (nullptr when they are not), or the
  // UNAUTHENTICATED status to answer with.
  grpc::Status authenticate(const grpc::CallbackServerContext& context, ApiKeys::Key*& key) const;
  template <class Request>
  grpc::ServerWriteReactor<grpc::ByteBuffer>* stream(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request, const char* method);
  // A Generate or Chat call answered before it reaches the engine, counted.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* refuse(const grpc::Status& status);
  void count(grpc::StatusCode code) {
    if (request_metrics_) request_metrics_->count(Api::Grpc, grpc_status_label(code));
  }

  Engine& engine_;
  ServedModel model_;
  v1::ModelInfo info_;
  bool log_requests_;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> active_streams_{0};
  std::function<int64_t()> other_open_requests_;
  ApiKeys* api_keys_ = nullptr;
  RequestMetrics* request_metrics_ = nullptr;
};

}  // namespace flint::server
