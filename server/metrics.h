// flintd's Prometheus metrics: the registry, what only the server knows (requests
// by API and outcome, the engine's state read at each scrape, build and model
// info) and the HTTP listener on --metrics-port that serves GET /metrics.
// docs/deploy.md ("Metrics") lists every metric.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include <grpcpp/support/status.h>

#include "common/metrics.h"
#include "engine/engine.h"
#include "flint/v1/inference.pb.h"

namespace httplib {
class Server;
}

namespace flint::server {

enum class Api { Grpc, Http };

// flint_requests_total{api, status}: one count per generation request (gRPC
// Generate/Chat, HTTP chat/completions) when it ends, refused or answered.
// status: "ok", "cancelled", "deadline_exceeded", else the gRPC code's name in
// lower case ("invalid_argument", "resource_exhausted", "unavailable", ...) or,
// for HTTP, the status class ("4xx", "5xx").
class RequestMetrics {
 public:
  explicit RequestMetrics(metrics::Registry& registry);
  void count(Api api, std::string_view status);

 private:
  metrics::Family<metrics::Counter>& requests_;
};

// The status label of a gRPC status code: "ok", "cancelled", "invalid_argument", ...
std::string_view grpc_status_label(grpc::StatusCode code);
// The status label of an HTTP status: "ok" for 2xx, else its class ("4xx", "5xx").
std::string_view http_status_label(int status);

class ServerMetrics {
 public:
  // Registers the engine's metrics and flint_requests_total; give engine_metrics()
  // to the engine's config before it starts.
  ServerMetrics();
  ~ServerMetrics();  // stop()
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  const EngineMetrics& engine_metrics() const { return engine_metrics_; }
  RequestMetrics& requests() { return requests_; }
  metrics::Registry& registry() { return registry_; }

  // Gauges and counters read from engine.stats() at each scrape (queue depth,
  // running sequences, KV blocks, prefix cache, steps, preemptions), and
  // flint_build_info / flint_model_info from `info`. `engine` must outlive the
  // listener (stop() first). Call once, before serve().
  void watch(const Engine& engine, const v1::ModelInfo& info);

  // Serves GET /metrics on host:port (0: any free port) on its own thread.
  // Throws flint::Error when it cannot listen.
  void serve(const std::string& host, int port);
  int port() const { return port_; }
  // Closes the listener and waits for its threads. Idempotent.
  void stop();

 private:
  metrics::Registry registry_;
  EngineMetrics engine_metrics_;
  RequestMetrics requests_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = -1;
};

}  // namespace flint::server
