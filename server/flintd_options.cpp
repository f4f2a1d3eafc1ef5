// flintd's flags.
#include "server/flintd_options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace flint::server {

std::string flintd_usage() {
  const FlintdOptions d;
  std::ostringstream s;
  s << "usage: flintd [options]\n"
    << "  --model PATH              GGUF file or HF directory (default " << d.model << ")\n"
    << "  --random-weights SPEC     serve a random bf16 model of a real shape instead of --model, for\n"
    << "                            benchmarks: NAME[:layers=N][,seed=S] (flint-run --list-shapes); needs\n"
    << "                            --tokenizer, as flintd serves text and such a model has no vocabulary\n"
    << "  --tokenizer PATH          with --random-weights: a .gguf file or HF directory whose tokenizer and\n"
    << "                            chat template to use (at most the shape's vocab_size tokens)\n"
    << "  --host ADDR               address to listen on (default " << d.host << ")\n"
    << "  --port N                  gRPC port, 0 picks a free one (default " << d.port << ")\n"
    << "  --http-port N             OpenAI-compatible HTTP API port on the same host, 0 picks a free one,\n"
    << "                            -1 turns HTTP off (default " << d.http_port << ")\n"
    << "  --http-threads N          HTTP connections served at once, a thread each; more wait (default "
    << d.http_threads << ")\n"
    << "  --metrics-port N          Prometheus metrics (GET /metrics) on this port of the same host, 0 picks\n"
    << "                            a free one, -1 turns them off (default " << d.metrics_port << ")\n"
    << "  --api-key KEY             gRPC calls and /v1/* HTTP requests need \"authorization: Bearer KEY\"\n"
    << "                            (default: none, or $FLINT_API_KEY when set)\n"
    << "  --api-key-file PATH       more keys, one per line: KEY [name=NAME] [max_concurrent=N]; '#' comments\n"
    << "  --max-requests-per-key N  requests one API key may have open at once, 0 for no limit; more get\n"
    << "                            RESOURCE_EXHAUSTED / HTTP 429 (default " << d.max_requests_per_key << ")\n"
    << "  --tls-cert PATH           PEM certificate chain: serve gRPC and HTTP over TLS (with --tls-key)\n"
    << "  --tls-key PATH            PEM private key of --tls-cert\n"
    << "  --tls-client-ca PATH      PEM CA bundle: require client certificates it signed (mutual TLS)\n"
    << "  --max-request-bytes SIZE  largest gRPC request message or HTTP body (default "
    << format_size(d.max_request_bytes) << ")\n"
    << "  --max-prompt-tokens N     tokens one prompt may have, 0 for the sequence limit (default "
    << d.max_prompt_tokens << ")\n"
    << "  --device auto|cpu|cuda    where the model runs; auto: CUDA when built with it and a GPU is present, else\n"
    << "                            the CPU (default " << d.device << ")\n"
    << "  --cuda-graphs on|off      CUDA graphs for decode steps, one per batch and context bucket, captured at\n"
    << "                            start; off runs every step eagerly, for debugging (default on)\n"
    << "  --max-running-seqs N      sequences batched in one step (default " << d.max_running_seqs << ")\n"
    << "  --max-batched-tokens N    tokens in one step; longer prompts prefill in chunks (default " << d.max_batched_tokens << ")\n"
    << "  --kv-cache-memory SIZE    KV cache size, e.g. 512MiB, 2GiB (default: 1GiB on the CPU; on CUDA 40% of the\n"
    << "                            GPU memory free after the weights and buffers)\n"
    << "  --block-size N            tokens per KV cache block (default " << d.block_size << ")\n"
    << "  --max-queue N             waiting requests; more get RESOURCE_EXHAUSTED (default " << d.max_queue << ")\n"
    << "  --drain-timeout SECONDS   on SIGTERM/SIGINT, time running streams get to finish (default " << d.drain_timeout_s << ")\n"
    << "  --threads N               CPU threads, 0 for all (default " << d.threads << ")\n"
    << "  --max-context N           tokens per sequence, 0 for the model's context length (default " << d.max_context << ")\n"
    << "  --chat-template NAME      chatml | qwen3 | llama3 | deepseek-r1 (default: from the model)\n"
    << "  --quiet                   no log line per request\n";
  return s.str();
}

std::optional<uint64_t> parse_size(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) return std::nullopt;
  // Named: `end` points into it, so it must outlive the check below (ASan found a
  // temporary destroyed before *end was read).
  const std::string number = text.substr(0, i);
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (!end || *end != '\0' || !std::isfinite(value) || value < 0) return std::nullopt;
  const std::string unit = text.substr(i);
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "K" || unit == "KiB" || unit == "k") scale = 1024.0;
  else if (unit == "M" || unit == "MiB") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "KB") scale = 1e3;
  else if (unit == "MB") scale = 1e6;
  else if (unit == "GB") scale = 1e9;
  else return std::nullopt;
  const double bytes = value * scale;
  if (bytes > 1e18) return std::nullopt;
  return static_cast<uint64_t>(bytes);
}

std::string format_size(uint64_t bytes) {
  char buf[32];
  if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0) std::snprintf(buf, sizeof buf, "%lluGiB", static_cast<unsigned long long>(bytes >> 30));
  else if (bytes >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.0fMiB", double(bytes) / (1 << 20));
  else if (bytes >= 1024 && bytes % 1024 == 0) std::snprintf(buf, sizeof buf, "%lluKiB", static_cast<unsigned long long>(bytes >> 10));
  else std::snprintf(buf, sizeof buf, "%lluB", static_cast<unsigned long long>(bytes));
  return buf;
}

std::optional<std::string> parse_flintd_args(const std::vector<std::string>& args, FlintdOptions& o, bool& help) {
  help = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i], value;
    const size_t eq = flag.find('=');
    const bool has_inline = flag.starts_with("--") && eq != std::string::npos;
    if (has_inline) value = flag.substr(eq + 1), flag = flag.substr(0, eq);
    auto take = [&]() -> std::optional<std::string> {
      if (has_inline) return value;
      if (i + 1 >= args.size()) return std::nullopt;
      return args[++i];
    };
    auto integer = [&](int64_t lo, int64_t hi, auto& field) -> std::optional<std::string> {
      auto v = take();
      if (!v) return flag + " needs a value";
      char* end = nullptr;
      errno = 0;
      const long long n = std::strtoll(v->c_str(), &end, 10);
      if (v->empty() || *end != '\0' || errno != 0 || n < lo || n > hi)
        return flag + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], not \"" + *v + "\"";
      field = static_cast<std::remove_reference_t<decltype(field)>>(n);
      return std::nullopt;
    };
    std::optional<std::string> error;
    if (flag == "-h" || flag == "--help") {
      help = true;
      return std::nullopt;
    } else if (flag == "--model" || flag == "-m") {
      auto v = take();
      if (!v || v->empty()) return "--model needs a path";
      o.model = *v;
    } else if (flag == "--random-weights" || flag == "--tokenizer") {
      auto v = take();
      if (!v || v->empty()) return flag + (flag == "--tokenizer" ? " needs a path" : " needs NAME[:layers=N][,seed=S]");
      (flag == "--tokenizer" ? o.tokenizer : o.random_weights) = *v;
    } else if (flag == "--host") {
      auto v = take();
      if (!v || v->empty()) return "--host needs an address";
      o.host = *v;
    } else if (flag == "--port") {
      error = integer(0, 65535, o.port);
    } else if (flag == "--http-port") {
      error = integer(-1, 65535, o.http_port);
    } else if (flag == "--http-threads") {
      error = integer(1, 4096, o.http_threads);
    } else if (flag == "--metrics-port") {
      error = integer(-1, 65535, o.metrics_port);
    } else if (flag == "--api-key") {
      auto v = take();
      if (!v || v->empty()) return "--api-key needs a key";
      o.api_key = *v;
    } else if (flag == "--api-key-file") {
      auto v = take();
      if (!v || v->empty()) return "--api-key-file needs a path";
      o.api_key_file = *v;
    } else if (flag == "--max-requests-per-key") {
      error = integer(0, 1 << 20, o.max_requests_per_key);
    } else if (flag == "--tls-cert" || flag == "--tls-key" || flag == "--tls-client-ca") {
      auto v = take();
      if (!v || v->empty()) return flag + " needs a path";
      (flag == "--tls-cert" ? o.tls_cert : flag == "--tls-key" ? o.tls_key : o.tls_client_ca) = *v;
    } else if (flag == "--max-request-bytes") {
      auto v = take();
      auto bytes = v ? parse_size(*v) : std::nullopt;
      if (!bytes || *bytes < 1024 || *bytes > (1ull << 30)) return "--max-request-bytes must be a size from 1KiB to 1GiB";
      o.max_request_bytes = *bytes;
    } else if (flag == "--max-prompt-tokens") {
      error = integer(0, 1 << 24, o.max_prompt_tokens);
    } else if (flag == "--device") {
      auto v = take();
      if (!v || (*v != "auto" && *v != "cpu" && *v != "cuda")) return "--device must be auto, cpu or cuda";
      o.device = *v;
    } else if (flag == "--cuda-graphs") {
      auto v = take();
      if (!v || (*v != "on" && *v != "off")) return "--cuda-graphs must be on or off";
      o.cuda_graphs = *v == "on";
    } else if (flag == "--max-running-seqs") {
      error = integer(1, 4096, o.max_running_seqs);
    } else if (flag == "--max-batched-tokens") {
      error = integer(1, 1 << 20, o.max_batched_tokens);
    } else if (flag == "--kv-cache-memory") {
      auto v = take();
      auto bytes = v ? parse_size(*v) : std::nullopt;
      if (!bytes || *bytes == 0) return "--kv-cache-memory must be a size such as 512MiB or 2GiB";
      o.kv_cache_memory = *bytes;
    } else if (flag == "--block-size") {
      error = integer(1, 1024, o.block_size);
    } else if (flag == "--max-queue") {
      error = integer(1, 1 << 20, o.max_queue);
    } else if (flag == "--drain-timeout") {
      auto v = take();
      char* end = nullptr;
      const double s = v ? std::strtod(v->c_str(), &end) : -1;
      if (!v || v->empty() || *end != '\0' || !(s >= 0 && s <= 86400)) return "--drain-timeout must be seconds in [0, 86400]";
      o.drain_timeout_s = s;
    } else if (flag == "--threads" || flag == "-t") {
      error = integer(0, 1024, o.threads);
    } else if (flag == "--max-context") {
      error = integer(0, 1 << 24, o.max_context);
    } else if (flag == "--chat-template") {
      auto v = take();
      if (!v) return "--chat-template needs a name";
      o.chat_template = *v;
    } else if (flag == "--quiet") {
      o.log_requests = false;
    } else {
      return "unknown option " + flag;
    }
    if (error) return error;
  }
  if (!o.random_weights.empty() && o.tokenizer.empty())
    return "--random-weights needs --tokenizer PATH: flintd serves text and a random model has no vocabulary "
           "(flint-run --random-weights --prompt-ids runs one without a tokenizer)";
  if (o.random_weights.empty() && !o.tokenizer.empty()) return "--tokenizer is only for --random-weights";
  return std::nullopt;
}

std::string describe(const FlintdOptions& o) {
  std::ostringstream s;
  const bool keys = !o.api_key.empty() || !o.api_key_file.empty();
  s << "  model:              "
    << (o.random_weights.empty() ? o.model : "random weights " + o.random_weights + ", tokenizer " + o.tokenizer) << "\n"
    << "  listen:             " << o.host << ":" << o.port << "\n"
    << "  http:               " << (o.http_port < 0 ? std::string("off") : o.host + ":" + std::to_string(o.http_port))
    << (o.http_port < 0 ? "" : ", " + std::to_string(o.http_threads) + " threads") << "\n"
    << "  tls:                "
    << (o.tls_cert.empty() ? std::string("off")
                           : o.tls_cert + (o.tls_client_ca.empty() ? "" : ", client certificates from " + o.tls_client_ca))
    << "\n"
    << "  metrics:            " << (o.metrics_port < 0 ? std::string("off") : o.host + ":" + std::to_string(o.metrics_port))
    << "\n"
    << "  api keys:           "
    << (!keys ? std::string("none (anyone who can connect may call)")
              : std::string(o.api_key.empty() ? "" : "--api-key") + (o.api_key.empty() || o.api_key_file.empty() ? "" : " and ") +
                    o.api_key_file + ", " +
                    (o.max_requests_per_key ? std::to_string(o.max_requests_per_key) : std::string("no limit")) +
                    " open requests per key")
    << "\n"
    << "  max request bytes:  " << format_size(o.max_request_bytes) << "\n"
    << "  max prompt tokens:  " << (o.max_prompt_tokens == 0 ? std::string("the sequence limit") : std::to_string(o.max_prompt_tokens)) << "\n"
    << "  device:             " << o.device << "\n"
    << "  max running seqs:   " << o.max_running_seqs << "\n"
    << "  max batched tokens: " << o.max_batched_tokens << "\n"
    << "  kv cache memory:    " << (o.kv_cache_memory ? format_size(o.kv_cache_memory) : std::string("device default (cpu 1GiB, cuda 40% of free)")) << "\n"
    << "  cuda graphs:        " << (o.cuda_graphs ? "on" : "off") << "\n"
    << "  block size:         " << o.block_size << "\n"
    << "  max queue:          " << o.max_queue << "\n"
    << "  drain timeout:      " << o.drain_timeout_s << " s\n"
    << "  threads:            " << (o.threads == 0 ? std::string("all") : std::to_string(o.threads)) << "\n"
    << "  max context:        " << (o.max_context == 0 ? std::string("the model's") : std::to_string(o.max_context)) << "\n"
    << "  chat template:      " << (o.chat_template.empty() ? std::string("from the model") : o.chat_template) << "\n";
  return s.str();
}

}  // namespace flint::server
