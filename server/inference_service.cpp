// InferenceService: parse, prepare, submit; a StreamReactor per stream writes the
// engine's events one at a time as gRPC's flow control allows.
#include "server/inference_service.h"

#include <cstdio>
#include <mutex>

#include <google/protobuf/stubs/logging.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include "common/error.h"

namespace flint::server {

namespace {

// protobuf reports which string field was not UTF-8 only through its log; while
// a request parses, this thread's log lines are captured instead of printed.
thread_local std::string* g_parse_log = nullptr;

void log_handler(google::protobuf::LogLevel level, const char* filename, int line, const std::string& message) {
  if (g_parse_log) {
    *g_parse_log += message;
    return;
  }
  static const char* const kLevels[] = {"INFO", "WARNING", "ERROR", "FATAL"};
  std::fprintf(stderr, "[libprotobuf %s %s:%d] %s\n", kLevels[level < 4 ? level : 3], filename, line, message.c_str());
}

void install_log_handler() {
  static std::once_flag once;
  std::call_once(once, [] { google::protobuf::SetLogHandler(&log_handler); });
}

template <class T>
grpc::Status parse(const grpc::ByteBuffer* request, T& message) {
  install_log_handler();  // parse_and_prepare may run without a service (fuzz/)
  grpc::ByteBuffer copy(*request);  // shares the slices
  grpc::ProtoBufferReader reader(&copy);
  std::string log;
  g_parse_log = &log;
  const bool ok = message.ParseFromZeroCopyStream(&reader);
  g_parse_log = nullptr;
  if (ok) return grpc::Status::OK;
  // "String field 'flint.v1.ChatMessage.content' contains invalid UTF-8 data ..."
  const size_t open = log.find("String field '"), close = log.find("' contains invalid UTF-8");
  if (open != std::string::npos && close != std::string::npos && close > open) {
    const size_t start = open + 14;
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "field " + log.substr(start, close - start) + " is not valid UTF-8 (string fields must be UTF-8 text)"};
  }
  return {grpc::StatusCode::INVALID_ARGUMENT,
          "the request is not a valid " + message.GetTypeName() + " (malformed protobuf bytes)"};
}

grpc::ByteBuffer serialize(const google::protobuf::Message& message) {
  grpc::ByteBuffer buffer;
  bool own = false;
  grpc::Status status = grpc::GenericSerialize<grpc::ProtoBufferWriter, google::protobuf::Message>(message, &buffer, &own);
  if (!status.ok()) fail("serializing ", message.GetTypeName(), ": ", status.error_message());
  return buffer;
}

grpc::Status grpc_status(const Status& status) {
  return status.ok() ? grpc::Status::OK : grpc::Status(flint::server::to_grpc(status.code), status.message);
}

// A steady-clock deadline from the call's, if it has one.
std::optional<Clock::time_point> deadline_of(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return std::nullopt;
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - std::chrono::system_clock::now());
}

// A streaming call answered before it reaches the engine.
class RefusedReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit RefusedReactor(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

const grpc::Status kDraining{grpc::StatusCode::UNAVAILABLE, "the server is draining: it takes no new requests"};

}  // namespace

grpc::StatusCode to_grpc(StatusCode code) {
  switch (code) {
    case StatusCode::Ok: return grpc::StatusCode::OK;
    case StatusCode::InvalidArgument: return grpc::StatusCode::INVALID_ARGUMENT;
    case StatusCode::ResourceExhausted: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case StatusCode::DeadlineExceeded: return grpc::StatusCode::DEADLINE_EXCEEDED;
    case StatusCode::Cancelled: return grpc::StatusCode::CANCELLED;
    case StatusCode::Unavailable: return grpc::StatusCode::UNAVAILABLE;
    case StatusCode::Internal: return grpc::StatusCode::INTERNAL;
  }
  return grpc::StatusCode::UNKNOWN;
}

// One Generate or Chat call. The engine thread (through the stream's listener)
// and gRPC's threads (OnWriteDone) both call pump(); at most one write is in
// flight, and no lock is held while gRPC is called.
class InferenceService::StreamReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  StreamReactor(InferenceService& service, std::shared_ptr<RequestStream> stream, PreparedRequest prepared,
                const char* method, ApiKeys::Lease lease)
      : service_(service), stream_(std::move(stream)), prepared_(std::move(prepared)), method_(method),
        lease_(std::move(lease)) {
    ++service_.active_streams_;
    link_ = std::make_shared<Link>();
    link_->reactor = this;
    stream_->set_listener([link = link_] {
      std::lock_guard lock(link->mu);
      if (link->reactor) link->reactor->pump();
    });
    pump();  // events may have arrived before the listener was set
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard lock(mu_);
      writing_ = false;
      if (!ok) {  // the client is gone
        if (finished_) return;
        finished_ = true;
        code_ = grpc::StatusCode::CANCELLED;
      }
    }
    if (!ok) {
      if (service_.log_requests_)
        std::fprintf(stderr, "flintd: %s %llu%s%s: the client went away\n", method_,
                     static_cast<unsigned long long>(stream_->id()), prepared_.request_id.empty() ? "" : " ",
                     prepared_.request_id.c_str());
      service_.engine_.cancel(stream_->id());
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the stream could not be written: the client went away"));
      return;
    }
    pump();
  }

  // The client cancelled, disconnected or ran out of deadline: the sequence leaves
  // the batch at the next step and its Cancelled final event ends the call.
  void OnCancel() override {
    { std::lock_guard lock(mu_); }  // orders this after the constructor for TSan: see OnDone
    service_.engine_.cancel(stream_->id());
  }

  void OnDone() override {
    // gRPC calls OnDone after every other reaction (OnWriteDone's pump()) has
    // returned, and any reaction after the constructor, ordered by its own
    // synchronization; in Debian's uninstrumented libgrpc TSan cannot see that
    // (scripts/test-sanitizers.sh), so take mu_, which the constructor's and every
    // later pump() held, to make the order explicit.
    { std::lock_guard lock(mu_); }
    {
      std::lock_guard lock(link_->mu);  // waits out a listener call in progress
      link_->reactor = nullptr;
    }
    service_.engine_.cancel(stream_->id());  // ignored when it already finished
    service_.count(code_);
    --service_.active_streams_;
    delete this;
  }

 private:
  struct Link {
    std::mutex mu;
    StreamReactor* reactor = nullptr;
  };

  void pump() {
    std::unique_lock lock(mu_);
    if (writing_ || finished_) return;
    std::optional<StreamEvent> event = stream_->try_pop();
    if (!event) return;
    if (const auto* delta = std::get_if<StreamDelta>(&*event)) {
      v1::GenerateResponse response;
      to_proto(*delta, prepared_, *service_.model_.tokenizer, *response.mutable_delta());
      buffer_ = serialize(response);
      writing_ = true;
      lock.unlock();
      StartWrite(&buffer_);
      return;
    }
    const auto& final = std::get<StreamFinal>(*event);
    finished_ = true;
    code_ = to_grpc(final.status.code);
    if (service_.log_requests_) log(final);
    if (!final.status.ok()) {
      lock.unlock();
      Finish(grpc_status(final.status));
      return;
    }
    v1::GenerateResponse response;
    to_proto(final, prepared_, *response.mutable_finished());
    buffer_ = serialize(response);
    lock.unlock();
    StartWriteAndFinish(&buffer_, grpc::WriteOptions(), grpc::Status::OK);
  }

  void log(const StreamFinal& final) const {
    std::fprintf(stderr, "flintd: %s %llu%s%s: %s\n", method_, static_cast<unsigned long long>(stream_->id()),
                 prepared_.request_id.empty() ? "" : " ", prepared_.request_id.c_str(), describe(final).c_str());
  }

  InferenceService& service_;
  std::shared_ptr<RequestStream> stream_;
  PreparedRequest prepared_;
  const char* method_;
  ApiKeys::Lease lease_;  // counts this call against its API key's limit until it is done
  std::shared_ptr<Link> link_;
  std::mutex mu_;
  bool writing_ = false, finished_ = false;
  // The status the call ends with; CANCELLED until the final event says otherwise
  // (a call can end without one: the client went away).
  grpc::StatusCode code_ = grpc::StatusCode::CANCELLED;
  grpc::ByteBuffer buffer_;  // the message being written
};

InferenceService::InferenceService(Engine& engine, const ServedModel& model, v1::ModelInfo info, bool log_requests)
    : engine_(engine), model_(model), info_(std::move(info)), log_requests_(log_requests) {
  install_log_handler();
}

grpc::Status InferenceService::authenticate(const grpc::CallbackServerContext& context, ApiKeys::Key*& key) const {
  key = nullptr;
  if (!api_keys_ || !api_keys_->enabled()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  const auto found = metadata.find("authorization");
  if (found != metadata.end()) key = api_keys_->authenticate(std::string_view(found->second.data(), found->second.size()));
  if (!key) return {grpc::StatusCode::UNAUTHENTICATED, std::string(kMissingKeyMessage)};
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::refuse(const grpc::Status& status) {
  count(status.error_code());
  return new RefusedReactor(status);
}

template <class Request>
grpc::Status parse_and_prepare(const grpc::ByteBuffer& request_bytes, const ServedModel& model,
                               PreparedRequest& prepared) {
  Request request;
  if (grpc::Status s = parse(&request_bytes, request); !s.ok()) return s;
  Status status;
  try {
    if constexpr (std::is_same_v<Request, v1::GenerateRequest>)
      status = prepare_generate(request, model, prepared);
    else
      status = prepare_chat(request, model, prepared);
  } catch (const Error& e) {  // the tokenizer refusing its input
    status = {StatusCode::InvalidArgument, e.what()};
  }
  return grpc_status(status);
}
template grpc::Status parse_and_prepare<v1::GenerateRequest>(const grpc::ByteBuffer&, const ServedModel&,
                                                             PreparedRequest&);
template grpc::Status parse_and_prepare<v1::ChatRequest>(const grpc::ByteBuffer&, const ServedModel&,
                                                         PreparedRequest&);

template <class Request>
grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::stream(grpc::CallbackServerContext* context,
                                                                     const grpc::ByteBuffer* request_bytes,
                                                                     const char* method) {
  ApiKeys::Key* key = nullptr;
  if (grpc::Status s = authenticate(*context, key); !s.ok()) return refuse(s);
  if (draining_) return refuse(kDraining);
  ApiKeys::Lease lease;
  if (key) {
    auto acquired = api_keys_->acquire(*key);
    if (!acquired)
      return refuse({grpc::StatusCode::RESOURCE_EXHAUSTED, key_limit_message(*key, api_keys_->limit_of(*key))});
    lease = std::move(*acquired);
  }
  PreparedRequest prepared;
  if (grpc::Status s = parse_and_prepare<Request>(*request_bytes, model_, prepared); !s.ok()) return refuse(s);
  prepared.request.deadline = deadline_of(*context);
  SubmitResult submitted = engine_.submit(prepared.request);
  if (!submitted.status.ok()) return refuse(grpc_status(submitted.status));
  return new StreamReactor(*this, std::move(submitted.stream), std::move(prepared), method, std::move(lease));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                                       const grpc::ByteBuffer* request) {
  return stream<v1::GenerateRequest>(context, request, "Generate");
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::Chat(grpc::CallbackServerContext* context,
                                                                   const grpc::ByteBuffer* request) {
  return stream<v1::ChatRequest>(context, request, "Chat");
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request_bytes, grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ApiKeys::Key* key = nullptr;
  if (grpc::Status s = authenticate(*context, key); !s.ok()) return reactor->Finish(s), reactor;
  if (draining_) return reactor->Finish(kDraining), reactor;
  v1::TokenizeRequest request;
  grpc::Status status = parse(request_bytes, request);
  if (status.ok()) {
    try {
      v1::TokenizeResponse out;
      std::vector<int32_t> ids;
      if (!request.messages().empty()) {
        if (!request.text().empty()) fail("set text or messages, not both");
        std::vector<ChatMessage> messages;
        if (Status s = chat_messages(request.messages(), messages); !s.ok()) fail(s.message);
        out.set_text(model_.chat_template->render(messages, chat_options(request.template_options(), true)));
        ids = model_.tokenizer->encode(out.text(), /*parse_special=*/true, /*add_bos=*/false);
      } else {
        out.set_text(request.text());
        ids = model_.tokenizer->encode(request.text(), /*parse_special=*/true,
                                       !request.has_add_special_tokens() || request.add_special_tokens());
      }
      for (int32_t id : ids) {
        out.add_token_ids(id);
        out.add_tokens(to_valid_utf8(model_.tokenizer->token_text(id)));
      }
      *response = serialize(out);
    } catch (const Error& e) {
      status = {grpc::StatusCode::INVALID_ARGUMENT, e.what()};
    }
  }
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request_bytes,
                                                       grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ApiKeys::Key* key = nullptr;
  if (grpc::Status s = authenticate(*context, key); !s.ok()) return reactor->Finish(s), reactor;
  if (draining_) return reactor->Finish(kDraining), reactor;
  v1::DetokenizeRequest request;
  grpc::Status status = parse(request_bytes, request);
  if (status.ok()) {
    const auto& ids = request.token_ids();
    for (int i = 0; i < ids.size() && status.ok(); ++i)
      if (ids[i] < 0 || ids[i] >= model_.vocab_size)
        status = {grpc::StatusCode::INVALID_ARGUMENT, "token_ids[" + std::to_string(i) + "] is " +
                                                          std::to_string(ids[i]) + ", outside the vocabulary [0, " +
                                                          std::to_string(model_.vocab_size) + ")"};
    if (status.ok()) {
      v1::DetokenizeResponse out;
      out.set_text(to_valid_utf8(model_.tokenizer->decode(std::vector<int32_t>(ids.begin(), ids.end()),
                                                          request.skip_special_tokens())));
      *response = serialize(out);
    }
  }
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request_bytes,
                                                         grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ApiKeys::Key* key = nullptr;
  if (grpc::Status s = authenticate(*context, key); !s.ok()) return reactor->Finish(s), reactor;
  v1::GetModelInfoRequest request;
  grpc::Status status = parse(request_bytes, request);
  if (status.ok()) *response = serialize(info_);
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetServerStats(grpc::CallbackServerContext* context,
                                                           const grpc::ByteBuffer* request_bytes,
                                                           grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ApiKeys::Key* key = nullptr;
  if (grpc::Status s = authenticate(*context, key); !s.ok()) return reactor->Finish(s), reactor;
  v1::GetServerStatsRequest request;
  grpc::Status status = parse(request_bytes, request);
  if (status.ok()) {
    const EngineStats stats = engine_.stats();
    v1::ServerStats out;
    out.set_num_waiting(stats.num_waiting);
    out.set_num_running(stats.num_running);
    out.set_num_free_kv_blocks(stats.num_free_blocks);
    out.set_num_kv_blocks(stats.num_blocks);
    out.set_num_steps(stats.num_steps);
    out.set_num_preemptions(stats.num_preempted);
    out.set_num_active_streams(active_streams_.load() + (other_open_requests_ ? other_open_requests_() : 0));
    out.set_draining(draining_.load());
    *response = serialize(out);
  }
  reactor->Finish(status);
  return reactor;
}

}  // namespace flint::server
