// flintd's metrics: registration, the status labels, and the /metrics listener.
#include "server/metrics.h"

#include <httplib.h>

#include <chrono>

#include "common/error.h"

namespace flint::server {

namespace {

const char* api_label(Api api) { return api == Api::Grpc ? "grpc" : "http"; }

#if defined(__clang__)
constexpr const char* kCompiler = "clang " __clang_version__;
#elif defined(__GNUC__)
constexpr const char* kCompiler = "gcc " __VERSION__;
#else
constexpr const char* kCompiler = "unknown";
#endif

}  // namespace

RequestMetrics::RequestMetrics(metrics::Registry& registry)
    : requests_(registry.counter("flint_requests_total",
                                 "Generation requests (gRPC Generate/Chat, HTTP chat/completions) by API and final "
                                 "status: ok, cancelled, deadline_exceeded, a gRPC code or an HTTP status class.",
                                 {"api", "status"})) {
  // Present at 0 from the start, so rate() and ratios have a series before the first request.
  for (Api api : {Api::Grpc, Api::Http}) requests_.labels({api_label(api), "ok"});
}

void RequestMetrics::count(Api api, std::string_view status) {
  requests_.labels({api_label(api), std::string(status)}).inc();
}

std::string_view grpc_status_label(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "ok";
    case grpc::StatusCode::CANCELLED: return "cancelled";
    case grpc::StatusCode::UNKNOWN: return "unknown";
    case grpc::StatusCode::INVALID_ARGUMENT: return "invalid_argument";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "deadline_exceeded";
    case grpc::StatusCode::NOT_FOUND: return "not_found";
    case grpc::StatusCode::ALREADY_EXISTS: return "already_exists";
    case grpc::StatusCode::PERMISSION_DENIED: return "permission_denied";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "resource_exhausted";
    case grpc::StatusCode::FAILED_PRECONDITION: return "failed_precondition";
    case grpc::StatusCode::ABORTED: return "aborted";
    case grpc::StatusCode::OUT_OF_RANGE: return "out_of_range";
    case grpc::StatusCode::UNIMPLEMENTED: return "unimplemented";
    case grpc::StatusCode::INTERNAL: return "internal";
    case grpc::StatusCode::UNAVAILABLE: return "unavailable";
    case grpc::StatusCode::DATA_LOSS: return "data_loss";
    case grpc::StatusCode::UNAUTHENTICATED: return "unauthenticated";
    default: return "unknown";
  }
}

std::string_view http_status_label(int status) {
  if (status >= 200 && status < 300) return "ok";
  if (status >= 400 && status < 500) return "4xx";
  if (status >= 500 && status < 600) return "5xx";
  if (status >= 300 && status < 400) return "3xx";
  return "1xx";
}

ServerMetrics::ServerMetrics() : engine_metrics_(EngineMetrics::create(registry_)), requests_(registry_) {}

ServerMetrics::~ServerMetrics() { stop(); }

void ServerMetrics::watch(const Engine& engine, const v1::ModelInfo& info) {
  using metrics::Type;
  const Engine* e = &engine;
  registry_.callback("flint_queue_depth",
                     "Requests submitted and waiting for a place in the batch (preempted sequences included); "
                     "the HPA's scaling metric.",
                     Type::Gauge, [e] {
                       const EngineStats s = e->stats();
                       return double(s.num_waiting) + double(s.num_submitted);
                     });
  registry_.callback("flint_running_sequences", "Sequences in the running batch.", Type::Gauge,
                     [e] { return double(e->stats().num_running); });
  registry_.callback("flint_kv_blocks_used", "KV cache blocks held by running sequences.", Type::Gauge, [e] {
    const EngineStats s = e->stats();
    return double(s.num_blocks - s.num_free_blocks);
  });
  registry_.callback("flint_kv_blocks_free",
                     "KV cache blocks free to allocate (never used, or cached by the prefix cache and held by no "
                     "sequence); used + free is the cache's size.",
                     Type::Gauge, [e] { return double(e->stats().num_free_blocks); });
  registry_.callback("flint_kv_blocks_cached", "KV cache blocks in the prefix cache, held or not.", Type::Gauge,
                     [e] { return double(e->stats().num_cached_blocks); });
  registry_.callback("flint_prefix_cache_query_tokens_total",
                     "Prompt tokens looked up in the prefix cache (at each admission, re-admissions after a "
                     "preemption included).",
                     Type::Counter, [e] { return double(e->stats().num_prefix_query_tokens); });
  registry_.callback("flint_prefix_cache_hit_tokens_total",
                     "Of the prompt tokens looked up, those found in the prefix cache (their prefill was skipped).",
                     Type::Counter, [e] { return double(e->stats().num_prefix_hit_tokens); });
  registry_.callback("flint_prefix_cache_hit_ratio",
                     "flint_prefix_cache_hit_tokens_total / flint_prefix_cache_query_tokens_total since start "
                     "(0 before the first lookup); take a ratio of rates for a recent window.",
                     Type::Gauge, [e] {
                       const EngineStats s = e->stats();
                       return s.num_prefix_query_tokens ? double(s.num_prefix_hit_tokens) / double(s.num_prefix_query_tokens)
                                                        : 0.0;
                     });
  registry_.callback("flint_engine_steps_total", "Engine steps (one batched forward pass each).", Type::Counter,
                     [e] { return double(e->stats().num_steps); });
  registry_.callback("flint_preemptions_total",
                     "Sequences preempted (their KV blocks taken back; recomputed when they resume).", Type::Counter,
                     [e] { return double(e->stats().num_preempted); });

  registry_.gauge("flint_build_info", "flintd's build; the value is always 1.", {"version", "compiler"})
      .labels({info.server_version(), kCompiler})
      .set(1);
  registry_.gauge("flint_model_info", "The model served; the value is always 1.",
                  {"model", "architecture", "weight_type", "device", "chat_template"})
      .labels({info.name(), info.architecture(), info.weight_type(), info.device(), info.chat_template()})
      .set(1);
  const double start = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  registry_.gauge("process_start_time_seconds", "When flintd started, in seconds since the Unix epoch.").get().set(start);
}

void ServerMetrics::serve(const std::string& host, int port) {
  server_ = std::make_unique<httplib::Server>();
  httplib::Server& s = *server_;
  // Scrapes are short and few: two connections at a time.
  s.new_task_queue = [] { return new httplib::ThreadPool(2); };
  s.set_keep_alive_timeout(2);
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry_.render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  port_ = port == 0 ? s.bind_to_any_port(host) : (s.bind_to_port(host, port) ? port : -1);
  if (port_ <= 0) {
    server_.reset();
    fail("cannot listen for metrics on ", host, ":", port, " (in use, or not an address of this machine?)");
  }
  auto listening_ended = std::make_shared<std::atomic<bool>>(false);
  thread_ = std::thread([this, listening_ended] {
    server_->listen_after_bind();
    *listening_ended = true;
  });
  // stop() only reaches a server that has started listening.
  while (!server_->is_running() && !*listening_ended) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void ServerMetrics::stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace flint::server
