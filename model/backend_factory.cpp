#include "model/backend_factory.h"

#include <cstdio>

#include "common/error.h"
#include "model/cpu_backend.h"
#include "model/fault_injection.h"
#ifdef FLINT_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "model/cuda_backend.h"
#endif

namespace flint {

bool cuda_backend_built() {
#ifdef FLINT_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count(std::string* why) {
#ifdef FLINT_HAVE_CUDA
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky-free error so a later query starts clean
    return 0;
  }
  if (n == 0 && why) *why = "the CUDA runtime reports 0 devices";
  return n;
#else
  if (why) *why = "this build has no CUDA backend";
  return 0;
#endif
}

std::string resolve_device(const std::string& requested, bool cuda_built, int num_gpus, const std::string& why_no_gpu) {
  if (requested == "cpu") return "cpu";
  if (requested == "auto") return cuda_built && num_gpus > 0 ? "cuda" : "cpu";
  if (requested != "cuda") fail("--device ", requested, ": want auto, cpu or cuda");
  if (!cuda_built)
    fail("--device cuda: this binary was built without CUDA (configure with -DFLINT_CUDA=ON where nvcc is "
         "installed); run with --device cpu");
  if (num_gpus < 1) fail("--device cuda: no CUDA device is usable (", why_no_gpu, "); run with --device cpu");
  return "cuda";
}

int32_t cpu_kv_blocks_for_bytes(uint64_t bytes, const ModelConfig& config, int32_t block_size) {
  const uint64_t per_token = 2ull * uint64_t(config.num_layers) * uint64_t(config.num_kv_heads) *
                             uint64_t(config.head_dim) * sizeof(float);
  const uint64_t per_block = per_token * uint64_t(block_size);
  if (per_block == 0) fail("kv cache: the model has no KV values");
  const uint64_t blocks = bytes / per_block;
  if (blocks < 1)
    fail("--kv-cache-memory of ", bytes, " bytes holds less than one KV block (", per_block, " bytes for ", block_size,
         " tokens)");
  if (blocks > (1u << 30)) fail("--kv-cache-memory is too large (", blocks, " blocks)");
  return int32_t(blocks);
}

namespace {

MadeBackend make_device_backend(const ModelConfig& config, const ModelWeights& weights, const BackendOptions& options) {
  std::string why;
  const int gpus = options.device == "cpu" ? 0 : cuda_device_count(&why);
  MadeBackend made;
  made.device = resolve_device(options.device, cuda_backend_built(), gpus, why);
  if (made.device == "cpu") {
    CpuBackendOptions o;
    o.block_size = options.block_size;
    o.num_threads = options.num_threads;
    o.num_kv_blocks = options.num_kv_blocks > 0
                          ? options.num_kv_blocks
                          : cpu_kv_blocks_for_bytes(options.kv_cache_memory ? options.kv_cache_memory : kCpuDefaultKvBytes,
                                                    config, options.block_size);
    auto cpu = std::make_unique<CpuBackend>(config, weights, o);
    made.description = "cpu, " + std::to_string(cpu->num_threads()) + " threads; KV cache " +
                       std::to_string(cpu->num_kv_blocks()) + " blocks x " + std::to_string(cpu->block_size()) +
                       " tokens (fp32)";
    made.backend = std::move(cpu);
    return made;
  }
#ifdef FLINT_HAVE_CUDA
  CudaBackendOptions o;
  o.block_size = options.block_size;
  o.num_kv_blocks = options.num_kv_blocks;
  o.kv_cache_memory = options.kv_cache_memory;
  o.max_tokens_per_step = options.max_tokens_per_step;
  o.max_seqs_per_step = options.max_seqs_per_step;
  o.max_logit_rows_per_step = options.max_logit_rows_per_step;
  o.cuda_graphs = options.cuda_graphs;
  o.log = options.log;
  auto cuda = std::make_unique<CudaBackend>(config, weights, o);
  made.description = "cuda, " + cuda->describe();
  made.graph_capture_seconds = cuda->graph_capture_seconds();
  made.backend = std::move(cuda);
  return made;
#else
  fail("--device cuda: this binary was built without CUDA");  // resolve_device refused already
#endif
}

}  // namespace

MadeBackend make_backend(const ModelConfig& config, const ModelWeights& weights, const BackendOptions& options) {
  const std::optional<int64_t> fault_after = fatal_after_steps_from_env();  // before the load: a bad value fails fast
  MadeBackend made = make_device_backend(config, weights, options);
  if (fault_after) {
    made.backend = std::make_unique<FatalFaultBackend>(std::move(made.backend), *fault_after);
    made.description += "; " + std::string(kFatalAfterStepsEnv) + "=" + std::to_string(*fault_after) +
                        ": a fatal fault after that many steps (a test hook)";
  }
  return made;
}

}  // namespace flint
