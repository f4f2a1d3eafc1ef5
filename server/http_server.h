// HttpServer: the OpenAI-compatible HTTP API (cpp-httplib) beside the gRPC one:
// POST /v1/chat/completions and /v1/completions (JSON or SSE), GET /v1/models,
// GET /health and the chat page at GET /. Bodies map onto flint.v1 requests
// (server/openai_json.h) and go through prepare_chat / prepare_generate, so
// checks, defaults and messages are gRPC's.
//
// Threads: cpp-httplib serves each connection on a thread of a fixed pool
// (--http-threads), which blocks while it streams: unlike gRPC's reactors (no
// thread per call), the pool's size bounds the HTTP streams served at once;
// more connections wait for a thread.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "engine/engine.h"
#include "server/auth.h"
#include "server/request_prep.h"
#include "server/tls.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace flint::server {

class RequestMetrics;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;          // 0: any free port
  int32_t num_threads = 64;
  ApiKeys* api_keys = nullptr;    // when it holds keys, /v1/* needs "Authorization: Bearer <key>"; outlives the server
  const TlsConfig* tls = nullptr;  // HTTPS (and client certificates when it has a CA); read at construction
  size_t max_body_bytes = 16 << 20;
  bool log_requests = true;
  RequestMetrics* metrics = nullptr;  // chat and completion requests counted as they end; null: not counted
};

class HttpServer {
 public:
  // Binds and starts serving on its own thread. `engine`, what `model` points to
  // and `serving` (the health status, SERVING when true) must outlive the server.
  // Throws flint::Error when it cannot listen.
  HttpServer(Engine& engine, const ServedModel& model, std::string model_name, const std::atomic<bool>& serving,
             const HttpOptions& options);
  ~HttpServer();  // stop()

  int port() const { return port_; }
  // From now on new requests get 503; streams already running go on.
  void start_draining() { draining_ = true; }
  // Chat and completion requests submitted and not yet answered in full.
  int64_t num_active_streams() const { return active_streams_.load(); }
  // Closes the listener and waits for the connection threads. Idempotent.
  void stop();

 private:
  class Call;
  enum class Kind { Chat, Completion };
  void generate(Kind kind, const httplib::Request& req, httplib::Response& res);

  Engine& engine_;
  ServedModel model_;
  std::string model_name_;
  const std::atomic<bool>& serving_;
  HttpOptions options_;
  int64_t created_ = 0;  // Unix seconds at start, for /v1/models
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> active_streams_{0};
};

}  // namespace flint::server
