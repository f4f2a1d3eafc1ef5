// Daemon: flintd's parts wired together: the model loaded, a backend, the engine,
// the gRPC server (Inference, health, reflection), the HTTP server (OpenAI API)
// and the health watchdog; and the drain that ends it.
#pragma once
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "engine/engine.h"
#include "model/chat_template.h"
#include "model/model_loader.h"
#include "server/auth.h"
#include "server/flintd_options.h"
#include "server/http_server.h"
#include "server/inference_service.h"
#include "server/metrics.h"
#include "server/tls.h"

namespace flint::server {

class Daemon {
 public:
  // Loads the model and starts serving, printing progress and the effective
  // configuration to stderr. Throws flint::Error on a bad model, device or
  // option, or an address it cannot listen on.
  explicit Daemon(const FlintdOptions& options);
  ~Daemon();

  int port() const { return port_; }  // the one bound (--port 0 picks one)
  int http_port() const { return http_ ? http_->port() : -1; }  // -1: HTTP off
  int metrics_port() const { return metrics_ ? metrics_->port() : -1; }  // -1: metrics off

  // Blocks until request_stop(), then drains: health NOT_SERVING, new calls get
  // UNAVAILABLE (HTTP 503), running streams (gRPC and HTTP) get up to
  // --drain-timeout to finish, the rest end with UNAVAILABLE. Returns once the
  // servers and engine are down.
  void run_until_stopped();
  // Thread-safe. The first call starts the drain; a second one cuts it short.
  void request_stop();
  // After run_until_stopped(): whether it stopped because the engine failed for good (Engine::fatal_error),
  // not on request; flintd then exits 1.
  bool failed() const { return failed_.load(); }

 private:
  void watch_health();
  void set_health(bool serving);

  FlintdOptions options_;
  ApiKeys api_keys_;
  std::optional<TlsConfig> tls_;
  LoadedModel model_;
  std::optional<ChatTemplate> chat_template_;
  std::unique_ptr<Backend> backend_;
  std::string device_;  // "cpu" or "cuda", as --device resolved
  std::unique_ptr<ServerMetrics> metrics_;  // before engine_: the engine records into it
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<bool> serving_{false};  // the health status, for HTTP's /health
  std::unique_ptr<HttpServer> http_;
  std::atomic<const HttpServer*> http_for_stats_{nullptr};  // GetServerStats reads it from gRPC threads

  std::mutex mu_;
  std::condition_variable cv_;
  int stop_requests_ = 0;
  bool stopped_ = false;
  std::atomic<bool> failed_{false};
  std::thread health_thread_;
};

}  // namespace flint::server
