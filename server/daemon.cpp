// Daemon: start-up in stages, each logged; a watchdog that keeps health SERVING
// only while the engine loop lives and makes progress; the drain.
#include "server/daemon.h"

#include <cstdio>
#include <filesystem>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "common/error.h"
#include "model/backend_factory.h"
#include "model/random_weights.h"

namespace flint::server {

namespace {

constexpr const char* kVersion = "0.1.0";
// Work pending and no step finished for this long: the loop is stuck, health
// goes NOT_SERVING until it moves again.
// Generous: one long prefill step on the CPU may take many seconds.
constexpr auto kStallTimeout = std::chrono::seconds(60);

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int64_t count_parameters(const WeightSource& source) {
  int64_t n = 0;
  for (const Tensor& t : source.tensors()) n += t.numel();
  return n;
}

}  // namespace

Daemon::Daemon(const FlintdOptions& options) : options_(options) {
  std::fprintf(stderr, "flintd %s starting with\n%s", kVersion, describe(options_).c_str());
  {  // The device first: --device cuda on a machine without one should not wait for the model to load.
    std::string why;
    const int gpus = options_.device == "cpu" ? 0 : cuda_device_count(&why);
    resolve_device(options_.device, cuda_backend_built(), gpus, why);
  }
  // Keys and certificates first: a wrong file should not wait for the model to load.
  api_keys_.set_default_max_concurrent(options_.max_requests_per_key);
  if (!options_.api_key.empty()) api_keys_.add(options_.api_key, "default");
  if (!options_.api_key_file.empty()) api_keys_.load_file(options_.api_key_file);
  if (!options_.api_key_file.empty() && !api_keys_.enabled())
    fail("--api-key-file ", options_.api_key_file, " holds no key (an empty file would leave the server open)");
  tls_ = load_tls(options_.tls_cert, options_.tls_key, options_.tls_client_ca);
  if (api_keys_.enabled() && !tls_ && options_.host != "127.0.0.1" && options_.host != "localhost" && options_.host != "::1")
    std::fprintf(stderr, "flintd: warning: API keys travel in plaintext on %s; serve with --tls-cert/--tls-key\n",
                 options_.host.c_str());

  auto t0 = Clock::now();
  if (options_.random_weights.empty()) {
    std::fprintf(stderr, "flintd: [1/3] loading %s\n", options_.model.c_str());
    model_ = load_model(options_.model);
    if (!model_.tokenizer) fail(options_.model, ": no tokenizer (tokenizer.json or GGUF vocabulary) to serve text with");
  } else {
    // A random-weight model has no vocabulary of its own; flintd serves text, so it borrows --tokenizer's
    // (parse_flintd_args requires one), whose token count must fit the shape's vocab_size.
    std::fprintf(stderr, "flintd: [1/3] generating random weights %s\n", options_.random_weights.c_str());
    model_ = load_random_model(parse_random_model_spec(options_.random_weights), options_.threads);
    attach_tokenizer(model_, options_.tokenizer);
  }
  std::fprintf(stderr, "flintd: [1/3] %s, %.0fM parameters, loaded in %.2f s\n", model_.config.describe().c_str(),
               double(count_parameters(*model_.source)) / 1e6, seconds_since(t0));

  chat_template_ = options_.chat_template.empty()
                       ? ChatTemplate::detect(model_.chat_template_source, model_.config.arch)
                       : ChatTemplate::by_name(options_.chat_template);
  std::fprintf(stderr, "flintd: [2/3] tokenizer: %d tokens; chat template: %s\n", model_.tokenizer->vocab_size(),
               std::string(chat_template_->name()).c_str());

  // The backend (--device) and its KV cache: fp32 K/V on the CPU, bf16 on CUDA (model/backend_factory.h).
  ModelConfig config = model_.config;
  if (options_.max_context > 0) config.max_context = config.max_context > 0 ? std::min(config.max_context, options_.max_context) : options_.max_context;
  t0 = Clock::now();
  BackendOptions backend_options;
  backend_options.device = options_.device;
  backend_options.block_size = options_.block_size;
  backend_options.kv_cache_memory = options_.kv_cache_memory;
  backend_options.num_threads = options_.threads;
  backend_options.max_tokens_per_step = options_.max_batched_tokens;
  backend_options.max_seqs_per_step = options_.max_running_seqs;
  backend_options.cuda_graphs = options_.cuda_graphs;
  MadeBackend made = make_backend(config, model_.weights, backend_options);
  const int32_t num_blocks = made.backend->num_kv_blocks();
  std::fprintf(stderr, "flintd: [3/3] device %s; KV capacity %lld tokens; in %.2f s\n", made.description.c_str(),
               static_cast<long long>(int64_t(num_blocks) * options_.block_size), seconds_since(t0));
  backend_ = std::move(made.backend);
  device_ = made.device;

  EngineConfig engine_config;
  engine_config.scheduler.max_num_seqs = options_.max_running_seqs;
  engine_config.scheduler.max_num_batched_tokens = options_.max_batched_tokens;
  engine_config.max_num_waiting = options_.max_queue;
  if (options_.metrics_port >= 0) {
    metrics_ = std::make_unique<ServerMetrics>();
    engine_config.metrics = &metrics_->engine_metrics();
  }
  engine_ = std::make_unique<Engine>(*backend_, &*model_.tokenizer, engine_config);

  ServedModel served{.tokenizer = &*model_.tokenizer,
                     .chat_template = &*chat_template_,
                     .vocab_size = model_.config.vocab_size,
                     .max_sequence_tokens = engine_->max_num_tokens_per_seq(),
                     .max_prompt_tokens = options_.max_prompt_tokens};
  v1::ModelInfo info;
  info.set_name(options_.random_weights.empty() ? std::filesystem::path(options_.model).stem().string() : model_.path);
  info.set_architecture(std::string(arch_name(model_.config.arch)));
  info.set_vocab_size(model_.config.vocab_size);
  info.set_context_length(model_.config.max_context);
  info.set_max_sequence_tokens(engine_->max_num_tokens_per_seq());
  info.set_chat_template(std::string(chat_template_->name()));
  info.set_think_start(chat_template_->think_start());
  info.set_think_end(chat_template_->think_end());
  for (int32_t id : model_.tokenizer->eog_ids()) info.add_eos_token_ids(id);
  info.set_weight_type(std::string(dtype_info(model_.weights.layers.at(0).wq->dtype).name));
  info.set_num_parameters(count_parameters(*model_.source));
  info.set_device(device_);
  info.set_max_running_seqs(options_.max_running_seqs);
  info.set_max_batched_tokens(options_.max_batched_tokens);
  info.set_kv_block_size(options_.block_size);
  info.set_num_kv_blocks(int32_t(num_blocks));
  info.set_max_queue(options_.max_queue);
  info.set_server_version(kVersion);
  const std::string model_name = info.name();
  if (metrics_) metrics_->watch(*engine_, info);
  service_ = std::make_unique<InferenceService>(*engine_, served, std::move(info), options_.log_requests);
  if (metrics_) service_->set_request_metrics(&metrics_->requests());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = (options_.host.find(':') != std::string::npos ? "[" + options_.host + "]" : options_.host) +
                              ":" + std::to_string(options_.port);
  builder.AddListeningPort(address, grpc_server_credentials(tls_), &port_);
  builder.SetMaxReceiveMessageSize(int(options_.max_request_bytes));
  service_->set_api_keys(&api_keys_);
  builder.RegisterService(service_.get());
  service_->set_other_open_requests([this] {
    const HttpServer* http = http_for_stats_.load();
    return http ? http->num_active_streams() : int64_t{0};
  });
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) fail("cannot listen on ", address, " (in use, or not an address of this machine?)");
  if (options_.http_port >= 0) {  // before any thread of ours: it may throw
    HttpOptions http{.host = options_.host,
                     .port = options_.http_port,
                     .num_threads = options_.http_threads,
                     .api_keys = &api_keys_,
                     .tls = tls_ ? &*tls_ : nullptr,
                     .max_body_bytes = size_t(options_.max_request_bytes),
                     .log_requests = options_.log_requests,
                     .metrics = metrics_ ? &metrics_->requests() : nullptr};
    http_ = std::make_unique<HttpServer>(*engine_, served, model_name, serving_, http);
    std::fprintf(stderr, "flintd: %s on %s:%d\n", tls_ ? "https" : "http", options_.host.c_str(), http_->port());
    http_for_stats_ = http_.get();
  }
  if (metrics_) {
    metrics_->serve(options_.host, options_.metrics_port);
    std::fprintf(stderr, "flintd: metrics on %s:%d\n", options_.host.c_str(), metrics_->port());
  }
  set_health(true);
  health_thread_ = std::thread([this] { watch_health(); });
  // Test harnesses wait for this line (and then read the http one above it).
  std::fprintf(stderr, "flintd: serving on %s:%d%s\n", options_.host.c_str(), port_,
               !tls_ ? "" : tls_->client_ca_path.empty() ? " (TLS)" : " (TLS, client certificates required)");
}

Daemon::~Daemon() {
  request_stop();
  {
    std::unique_lock lock(mu_);
    if (!stopped_) {
      lock.unlock();
      run_until_stopped();
    }
  }
  if (health_thread_.joinable()) health_thread_.join();
}

void Daemon::set_health(bool serving) {
  // "" is the server as a whole; the service by name, for checks that ask for it.
  serving_ = serving;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus("", serving);
  health->SetServingStatus(v1::Inference::service_full_name(), serving);
}

void Daemon::request_stop() {
  {
    std::lock_guard lock(mu_);
    ++stop_requests_;
  }
  cv_.notify_all();
}

void Daemon::watch_health() {
  bool serving = true;
  std::optional<Clock::time_point> busy_since;  // when work was first seen pending
  std::unique_lock lock(mu_);
  while (stop_requests_ == 0) {
    const EngineStats stats = engine_->stats();
    const Clock::time_point now = Clock::now();
    const bool idle = stats.num_waiting == 0 && stats.num_running == 0;
    if (idle) busy_since.reset();
    else if (!busy_since) busy_since = now;
    // The loop's last step does not advance while idle: progress counts from when work arrived.
    const Clock::time_point progress = idle ? now : std::max(engine_->last_step_time(), *busy_since);
    if (std::string fatal = engine_->fatal_error(); !fatal.empty()) {
      // The backend can run nothing more (a faulted GPU): down for good. Exit non-zero so that a supervisor
      // (systemd, Kubernetes) restarts the process; the drain ends whatever the engine has not ended already.
      set_health(false);
      std::fprintf(stderr, "flintd: health NOT_SERVING: %s; stopping (exit status 1) so that a supervisor restarts "
                           "flintd\n", fatal.c_str());
      failed_ = true;
      ++stop_requests_;
      cv_.notify_all();
      break;
    }
    const bool now_serving = engine_->alive() && now - progress < kStallTimeout;
    if (now_serving != serving) {
      serving = now_serving;
      set_health(serving);
      std::fprintf(stderr, "flintd: health %s\n", serving ? "SERVING" : "NOT_SERVING (the engine loop is not making progress)");
    }
    cv_.wait_for(lock, std::chrono::milliseconds(200));
  }
}

void Daemon::run_until_stopped() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return stop_requests_ > 0; });
  if (stopped_) return;
  lock.unlock();
  if (health_thread_.joinable()) health_thread_.join();

  set_health(false);
  service_->start_draining();
  if (http_) http_->start_draining();
  auto num_active = [&] { return service_->num_active_streams() + (http_ ? http_->num_active_streams() : 0); };
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.drain_timeout_s));
  std::fprintf(stderr, "flintd: draining: %lld streams running, up to %.1f s\n", static_cast<long long>(num_active()),
               options_.drain_timeout_s);
  lock.lock();
  // Poll: streams end on the engine's, gRPC's and HTTP's threads, which do not notify us.
  while (stop_requests_ < 2 && num_active() > 0 && Clock::now() < deadline)
    cv_.wait_for(lock, std::chrono::milliseconds(20));
  lock.unlock();
  const int64_t left = num_active();
  engine_->shutdown();  // streams still running end with UNAVAILABLE
  // HTTP streams write their error events on their own threads, and stopping the
  // listener ends a stream wherever it is: give them a moment to finish first.
  const auto cutoff = Clock::now() + std::chrono::seconds(2);
  while (http_ && http_->num_active_streams() > 0 && Clock::now() < cutoff)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (http_) http_->stop();
  if (metrics_) metrics_->stop();  // its scrapes read the engine, which goes before it
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
  std::fprintf(stderr, "flintd: stopped after %.2f s of draining (%lld streams cut short)\n", seconds_since(t0),
               static_cast<long long>(left));
  lock.lock();
  stopped_ = true;
}

}  // namespace flint::server
