// make_backend: the one place a Backend is chosen and built from --device (flintd, flint-run and the per-layer
// diff share it). "auto" picks CUDA when this build has it and a GPU is present, else the CPU; "cuda" without
// either is an error that says which is missing. The KV cache is sized here, per device: the CPU backend keeps
// fp32 K/V, the CUDA backend bf16.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "model/backend.h"
#include "model/model_weights.h"

namespace flint {

struct BackendOptions {
  std::string device = "auto";        // auto | cpu | cuda
  int32_t block_size = 16;            // tokens per KV block
  int32_t num_kv_blocks = 0;          // > 0: exactly this many blocks (overrides kv_cache_memory)
  uint64_t kv_cache_memory = 0;       // KV bytes; 0: the device's default (kCpuDefaultKvBytes; on CUDA
                                      // kCudaDefaultKvFraction of the free memory)
  int32_t num_threads = 0;            // CPU threads, 0: all
  int32_t max_tokens_per_step = 2048; // CUDA: activations are sized for this many tokens per step
  int32_t max_seqs_per_step = 256;    // CUDA: sequences per step (graph buckets, attention workspace)
  int32_t max_logit_rows_per_step = 0;  // CUDA: logit rows per step, 0: max_seqs_per_step (one per sequence)
  bool cuda_graphs = true;            // CUDA: capture decode graphs
  bool log = true;                    // CUDA: progress of the load on stderr
};

constexpr uint64_t kCpuDefaultKvBytes = 1ull << 30;

struct MadeBackend {
  std::unique_ptr<Backend> backend;
  std::string device;       // "cpu" or "cuda"
  std::string description;  // one line for the start-up log (threads or GPU, KV blocks and bytes)
  double graph_capture_seconds = 0;  // CUDA: of the construction, the decode graphs' capture; 0 on the CPU
};

// Whether this binary was built with the CUDA backend.
bool cuda_backend_built();
// CUDA devices this process sees; 0 (and why, when `why` is given) when none or CUDA was not built.
int cuda_device_count(std::string* why = nullptr);
// "cpu" or "cuda" for a requested device, given what is available; throws flint::Error for an unknown name or
// "cuda" that cannot be had (naming the reason: not built, or no device and the runtime's error).
std::string resolve_device(const std::string& requested, bool cuda_built, int num_gpus, const std::string& why_no_gpu);
// KV blocks of the CPU backend's fp32 cache that fit in `bytes`; throws when not one does.
int32_t cpu_kv_blocks_for_bytes(uint64_t bytes, const ModelConfig& config, int32_t block_size);

// Builds the backend (weights must outlive a CPU backend; the CUDA backend copies them to the device). With
// FLINT_TEST_FATAL_AFTER_STEPS set, wrapped in a FatalFaultBackend (model/fault_injection.h: a test hook).
MadeBackend make_backend(const ModelConfig& config, const ModelWeights& weights, const BackendOptions& options);

}  // namespace flint
