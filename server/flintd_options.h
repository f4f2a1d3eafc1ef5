// flintd's command line: every flag with its documented default, parsed into
// FlintdOptions; the effective configuration printed at start.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace flint::server {

struct FlintdOptions {
  std::string model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::string random_weights;            // NAME[:layers=N][,seed=S]: a random bf16 model instead of --model
  std::string tokenizer;                 // with random_weights: a .gguf or HF directory whose tokenizer to use
  std::string host = "127.0.0.1";
  int port = 50051;                      // gRPC; 0: any free port (printed when serving)
  int http_port = 8000;                  // the OpenAI-compatible HTTP API; 0: any free port, -1: none
  int32_t http_threads = 64;             // HTTP connections served at once (a thread each)
  int metrics_port = -1;                 // Prometheus GET /metrics; 0: any free port, -1: none
  std::string api_key;                   // "": none; else the APIs need "authorization: Bearer <key>"
  std::string api_key_file;              // more keys, one per line (server/auth.h); "": none
  int32_t max_requests_per_key = 0;      // requests open at once per API key, 0: no limit
  std::string tls_cert, tls_key;         // PEM files: TLS on the gRPC and HTTP listeners
  std::string tls_client_ca;             // PEM CA: clients must present a certificate it signed
  uint64_t max_request_bytes = 16ull << 20;  // largest gRPC message or HTTP body accepted
  int32_t max_prompt_tokens = 0;         // tokens in one prompt, 0: up to the sequence limit
  std::string device = "auto";           // auto | cpu | cuda
  int32_t max_running_seqs = 64;         // sequences in one step
  int32_t max_batched_tokens = 2048;     // tokens in one step (chunked prefill budget)
  uint64_t kv_cache_memory = 0;          // bytes of KV cache; 0: the device's default (cpu 1GiB, cuda 40% of free)
  bool cuda_graphs = true;               // --cuda-graphs on|off: CUDA graphs for decode steps
  int32_t block_size = 16;               // tokens per KV block
  int32_t max_queue = 256;               // waiting requests; more get RESOURCE_EXHAUSTED
  double drain_timeout_s = 30.0;         // on SIGTERM: how long running streams may finish
  int32_t threads = 0;                   // CPU threads, 0: all
  int32_t max_context = 0;               // tokens per sequence, 0: the model's context length
  std::string chat_template;             // "" : detected from the model
  bool log_requests = true;
};

// The usage text, with the defaults above.
std::string flintd_usage();

// Parses argv (without argv[0]) over `out` as it is (flintd_main puts FLINT_API_KEY
// in api_key first); on a bad flag or value returns the message, and
// sets `help` for -h/--help.
std::optional<std::string> parse_flintd_args(const std::vector<std::string>& args, FlintdOptions& out, bool& help);

// "64MiB", "1GiB", "512M", "2G", "1048576": bytes; nullopt when not a size.
std::optional<uint64_t> parse_size(const std::string& text);
std::string format_size(uint64_t bytes);

// One "key: value" line per setting, for the start-up log.
std::string describe(const FlintdOptions& options);

}  // namespace flint::server
