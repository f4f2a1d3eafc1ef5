// The decoder-only transformer forward pass on the GPU, composed from kernels/cuda. Every CUDA call and launcher
// result is checked and turned into a flint::Error naming what failed; nothing falls back silently.
#include "model/cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "kernels/bf16.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/sampling.h"
#include "model/cuda_backend_host.h"

namespace flint {

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("cuda backend: ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}
// A launcher's result: its own message when it refused the params, else the CUDA error.
void check_op(cudaError_t e, const char* op, const std::string& why) {
  if (e == cudaSuccess) return;
  if (!why.empty()) fail("cuda backend: ", op, ": ", why);
  fail("cuda backend: ", op, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

double gib(uint64_t bytes) { return double(bytes) / double(1ull << 30); }

}  // namespace

void* CudaBackend::device_alloc(size_t bytes, const char* what) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 256));
  if (e != cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);  // for the message only
    fail("cuda backend: allocating ", bytes, " bytes for ", what, " failed: ", cudaGetErrorName(e), " (",
         gib(free_b), " GiB free of ", gib(total_b), " GiB)");
  }
  allocations_.push_back(p);
  return p;
}

CudaBackend::CudaBackend(const ModelConfig& config, const ModelWeights& weights, const CudaBackendOptions& options)
    : config_(config), block_size_(options.block_size), log_(options.log) {
  config_.validate();
  const auto t0 = std::chrono::steady_clock::now();
  // Shapes the kernels take; refused here with the reason rather than by a launcher mid-step.
  if (!attention_head_dim_supported(config_.head_dim))
    fail("cuda backend: head_dim ", config_.head_dim, " is not supported by the CUDA attention (64 or 128)");
  if (config_.hidden_size % 8 || config_.ffn_size % 8)
    fail("cuda backend: hidden size ", config_.hidden_size, " and ffn size ", config_.ffn_size,
         " must be multiples of 8 (16-byte rows; the gate/up interleave)");
  if (block_size_ < 1) fail("cuda backend: block size ", block_size_, " must be >= 1");
  if (options.max_tokens_per_step < 1 || options.max_seqs_per_step < 1)
    fail("cuda backend: max_tokens_per_step and max_seqs_per_step must be >= 1");
  if (config_.max_context < 1) fail("cuda backend: the model's max_context is ", config_.max_context);
  max_tokens_ = options.max_tokens_per_step;
  max_seqs_ = std::min(options.max_seqs_per_step, max_tokens_);
  // One sampled row per sequence (a graph bucket's every row) unless asked for more, never more than a step's tokens.
  max_logit_rows_ = std::max(max_seqs_, std::min(options.max_logit_rows_per_step, max_tokens_));
  table_width_ = (config_.max_context + block_size_ - 1) / block_size_;
  // A sequence never spans more blocks than the cache has: when the cache size is given, it caps the block table's
  // width, and with it what a graph's attention is sized for (max_kv_len) and the attention workspace. (Sized from
  // the free memory, the cache is only known after the buffers are allocated: then the context decides.)
  if (options.num_kv_blocks > 0) {
    table_width_ = std::min(table_width_, options.num_kv_blocks);
  } else if (options.kv_cache_memory > 0) {
    const int64_t blocks = cuda_kv_blocks_for_bytes(options.kv_cache_memory, config_, block_size_);
    if (blocks > 0) table_width_ = int32_t(std::min<int64_t>(table_width_, blocks));
  }

  try {
    initialize(weights, options);
  } catch (...) {
    release();  // the destructor does not run for a constructor that throws: give back what was allocated
    throw;
  }
  if (options.log) std::fprintf(stderr, "cuda backend: ready in %.2f s\n", seconds_since(t0));
}

void CudaBackend::initialize(const ModelWeights& weights, const CudaBackendOptions& options) {
  int num_devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&num_devices);
  if (e != cudaSuccess || num_devices == 0)
    fail("cuda backend: no CUDA device (", e != cudaSuccess ? cudaGetErrorName(e) : "0 devices", ")");
  if (options.device < 0 || options.device >= num_devices)
    fail("cuda backend: device ", options.device, " does not exist (", num_devices, " devices)");
  device_ = options.device;
  check(cudaSetDevice(device_), "cudaSetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, options.device), "cudaGetDeviceProperties");
  device_name_ = prop.name;
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  try {
    B_.l2_prefetch_budget = cuda_l2_prefetch_budget(std::getenv("FLINT_L2_PREFETCH"), prop.l2CacheSize);
  } catch (const Error& err) {
    fail("cuda backend: ", err.what());
  }
  if (options.log && B_.l2_prefetch_budget > 0)
    std::fprintf(stderr, "cuda backend: L2 prefetch of the next matmul's weights where the pair fits %.1f MiB (L2 %.1f MiB)\n",
                 double(B_.l2_prefetch_budget) / 1048576.0, double(prop.l2CacheSize) / 1048576.0);

  if (options.log) std::fprintf(stderr, "cuda backend: %s, %s\n", device_name_.c_str(), config_.describe().c_str());
  upload_weights(weights);
  allocate_buffers();
  allocate_kv_cache(options);
  if (options.log)
    std::fprintf(stderr, "cuda backend: weights %.2f GiB, buffers %.2f GiB, KV cache %d blocks x %d tokens (%.2f GiB)\n",
                 gib(weight_bytes_), gib(buffer_bytes_), num_blocks_, block_size_, gib(kv_bytes_));
  buckets_ = cuda_graph_buckets(max_seqs_);
  widths_ = cuda_graph_widths(table_width_, block_size_);
  if (options.cuda_graphs) {
    capture_graphs();
    if (options.log)
      std::fprintf(stderr, "cuda backend: captured %zu decode graphs (batch %d..%d x context %d..%d) in %.2f s\n",
                   graphs_.size(), buckets_.front(), buckets_.back(), widths_.front() * block_size_,
                   widths_.back() * block_size_, capture_seconds_);
  } else if (options.log) {
    std::fprintf(stderr, "cuda backend: CUDA graphs off: every step runs eagerly\n");
  }
}

CudaBackend::~CudaBackend() { release(); }

void CudaBackend::release() {
  // No throwing here: errors on the way out are ignored (the process is usually ending).
  if (stream_) cudaStreamSynchronize(stream_);
  for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
  for (void* p : allocations_) cudaFree(p);
  if (staging_host_) cudaFreeHost(staging_host_);
  if (sample_host_) cudaFreeHost(sample_host_);
  if (sample_out_host_) cudaFreeHost(sample_out_host_);
  if (sample_dev_) cudaFree(sample_dev_);
  if (stream_) cudaStreamDestroy(stream_);
  graphs_.clear(), allocations_.clear();
  staging_host_ = nullptr, sample_host_ = nullptr, sample_dev_ = nullptr, sample_out_host_ = nullptr, stream_ = nullptr;
}

std::string CudaBackend::describe() const {
  char buf[320];
  std::snprintf(buf, sizeof buf, "%s; weights %.2f GiB bf16; KV cache %d blocks x %d tokens (%.2f GiB); %s; sampling on the device",
                device_name_.c_str(), gib(weight_bytes_), num_blocks_, block_size_, gib(kv_bytes_),
                graphs_.empty() ? "no CUDA graphs" : (std::to_string(graphs_.size()) + " decode graphs").c_str());
  return buf;
}

void CudaBackend::upload_weights(const ModelWeights& weights) {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& c = config_;
  // Every packed weight and where it goes; sizes first, so one allocation holds them all.
  struct Job {
    PackedWeight w;
    const bf16_bits** dst;
  };
  std::vector<Job> jobs;
  layers_.resize(size_t(c.num_layers));
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = weights.layers[size_t(l)];
    ForwardLayer& dl = layers_[size_t(l)];
    jobs.push_back({pack_qkv(lw, c), &dl.qkv});
    if (PackedWeight b = pack_qkv_bias(lw, c); b.rows > 0) jobs.push_back({b, &dl.maybe_qkv_bias});
    jobs.push_back({pack_plain(*lw.wo), &dl.wo});
    jobs.push_back({pack_gate_up(lw, c), &dl.gate_up});
    jobs.push_back({pack_plain(*lw.w_down), &dl.down});
    jobs.push_back({pack_plain(*lw.attn_norm), &dl.attn_norm});
    jobs.push_back({pack_plain(*lw.ffn_norm), &dl.ffn_norm});
    if (lw.maybe_q_norm) jobs.push_back({pack_plain(*lw.maybe_q_norm), &dl.maybe_q_norm});
    if (lw.maybe_k_norm) jobs.push_back({pack_plain(*lw.maybe_k_norm), &dl.maybe_k_norm});
  }
  const size_t layer_jobs = jobs.size();
  jobs.push_back({pack_plain(*weights.tok_embd), &B_.tok_embd});
  jobs.push_back({pack_plain(*weights.output_norm), &B_.output_norm});
  const bool tied = weights.output == weights.tok_embd;
  if (!tied) jobs.push_back({pack_plain(*weights.output), &B_.output});

  size_t total = 0, staging = 0;
  for (const Job& j : jobs) {
    total += align_up(size_t(j.w.rows * j.w.cols) * sizeof(bf16_bits), 256);
    for (const PackPiece& p : j.w.pieces) staging = std::max<size_t>(staging, p.src->nbytes);
  }
  auto* base = static_cast<uint8_t*>(device_alloc(total, "the weights"));
  weight_bytes_ = total;
  void* src_dev = device_alloc(staging, "the weight upload staging buffer");
  size_t at = 0;
  uint64_t file_bytes = 0;
  int logged_tenth = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    Job& j = jobs[i];
    auto* dst = reinterpret_cast<bf16_bits*>(base + at);
    at += align_up(size_t(j.w.rows * j.w.cols) * sizeof(bf16_bits), 256);
    *j.dst = dst;
    for (const PackPiece& piece : j.w.pieces) {
      // Stream order keeps the next copy into the staging buffer behind this dequantize.
      check(cudaMemcpyAsync(src_dev, piece.src->data, piece.src->nbytes, cudaMemcpyHostToDevice, stream_),
            "copying a weight to the device");
      const DequantParams p = pack_piece_params(j.w, piece, src_dev, dst);
      std::string why;
      const cudaError_t e = cuda::dequantize(p, stream_, &why);
      if (e != cudaSuccess) fail("cuda backend: dequantizing ", piece.src->name, ": ", why.empty() ? cudaGetErrorName(e) : why);
      file_bytes += piece.src->nbytes;
    }
    // Progress every tenth of the layers' weights (the bulk of the bytes).
    const int tenth = i < layer_jobs ? int(10 * (i + 1) / layer_jobs) : 10;
    if (log_ && tenth > logged_tenth && tenth < 10) {
      check(cudaStreamSynchronize(stream_), "uploading the weights");
      std::fprintf(stderr, "cuda backend: weights %d%% (%.2f GiB from the file) in %.1f s\n", tenth * 10,
                   gib(file_bytes), seconds_since(t0));
      logged_tenth = tenth;
    }
  }
  if (tied) B_.output = B_.tok_embd;
  // RoPE frequencies with the model's scaling, as the CPU backend computes them.
  cpu::RopeParams rope;
  rope.head_dim = c.head_dim;
  rope.theta = c.rope_theta;
  rope.style = c.rope_style;
  rope.scaling_factor = c.rope_scaling.factor;
  rope.low_freq_factor = c.rope_scaling.low_freq_factor;
  rope.high_freq_factor = c.rope_scaling.high_freq_factor;
  rope.original_max_position = c.rope_scaling.original_max_position;
  std::vector<float> inv_freq(size_t(c.head_dim / 2));
  cpu::rope_inv_freq(rope, inv_freq.data());
  auto* inv_freq_dev = static_cast<float*>(device_alloc(inv_freq.size() * sizeof(float), "rope inv_freq"));
  B_.inv_freq = inv_freq_dev;
  check(cudaMemcpyAsync(inv_freq_dev, inv_freq.data(), inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice, stream_),
        "copying rope inv_freq");
  check(cudaStreamSynchronize(stream_), "uploading the weights");
  // The staging buffer is not needed any more; give its memory back before the KV cache is sized.
  check(cudaFree(src_dev), "freeing the weight staging buffer");
  allocations_.erase(std::find(allocations_.begin(), allocations_.end(), src_dev));
  if (log_)
    std::fprintf(stderr, "cuda backend: weights 100%%: %.2f GiB from the file -> %.2f GiB bf16 in %.2f s\n",
                 gib(file_bytes), gib(weight_bytes_), seconds_since(t0));
}

void CudaBackend::allocate_buffers() {
  const ModelConfig& c = config_;
  const int64_t T = max_tokens_, R = max_logit_rows_, hidden = c.hidden_size, ffn = c.ffn_size;
  const int64_t nq = int64_t(c.num_qo_heads) * c.head_dim, nkv = int64_t(c.num_kv_heads) * c.head_dim;
  // Zeroed once: a graph's padding rows are computed through every row-wise op (their attention output is never
  // written), so they must start from finite values; their results are never copied back.
  auto zeroed = [&](size_t bytes, const char* what) {
    void* p = device_alloc(bytes, what);
    check(cudaMemset(p, 0, bytes), "zeroing an activation buffer");
    buffer_bytes_ += bytes;
    return p;
  };
  auto bf16_buf = [&](int64_t elems, const char* what) { return static_cast<bf16_bits*>(zeroed(size_t(elems) * 2, what)); };
  auto f32_buf = [&](int64_t elems, const char* what) { return static_cast<float*>(zeroed(size_t(elems) * 4, what)); };
  B_.x = f32_buf(T * hidden, "the residual stream");
  B_.h = bf16_buf(T * hidden, "the norm output");
  B_.q = bf16_buf(T * nq, "q");
  B_.k = bf16_buf(T * nkv, "k");
  B_.v = bf16_buf(T * nkv, "v");
  B_.attn = bf16_buf(T * nq, "the attention output");
  B_.proj = f32_buf(T * hidden, "the projection output");
  B_.act = bf16_buf(T * ffn, "the MLP activation");
  B_.gh = bf16_buf(R * hidden, "the final norm rows");
  B_.logits = f32_buf(R * int64_t(c.vocab_size), "the logits");
  // Workspaces for the largest step: split-K partial sums grow with M, so the largest M of each shape decides.
  const int M = int(T);
  for (auto [m, n, k] : {std::tuple{M, int(nq + 2 * nkv), int(hidden)}, std::tuple{M, int(hidden), int(nq)},
                         std::tuple{M, int(2 * ffn), int(hidden)}, std::tuple{M, int(hidden), int(ffn)},
                         std::tuple{int(R), c.vocab_size, int(hidden)}})
    B_.matmul_ws_bytes = std::max(B_.matmul_ws_bytes, cuda::matmul_workspace_bytes(m, n, k, cuda::MatmulKernel::Auto));
  if (B_.matmul_ws_bytes) B_.matmul_ws = device_alloc(B_.matmul_ws_bytes, "the matmul workspace");
  B_.attn_ws_bytes = attention_workspace_bytes(max_seqs_, c.num_qo_heads, c.head_dim, table_width_ * block_size_);
  if (B_.attn_ws_bytes) B_.attn_ws = device_alloc(B_.attn_ws_bytes, "the attention workspace");
  B_.num_attn_counters = attention_split_counters(max_seqs_, c.num_qo_heads, table_width_ * block_size_);
  if (B_.num_attn_counters) {  // zero once; every decode call leaves them zero
    B_.attn_counters = static_cast<int32_t*>(device_alloc(B_.num_attn_counters * 4, "the attention split counters"));
    check(cudaMemset(B_.attn_counters, 0, B_.num_attn_counters * 4), "zeroing the attention split counters");
  }
  buffer_bytes_ += B_.matmul_ws_bytes + B_.attn_ws_bytes + B_.num_attn_counters * 4;
  // The index arrays of the largest step (a graph bucket's layout is never larger: b <= max_seqs <= max_tokens).
  staging_elems_ = cuda_step_layout(max_tokens_, max_seqs_, table_width_, max_logit_rows_).total;
  check(cudaHostAlloc(reinterpret_cast<void**>(&staging_host_), size_t(staging_elems_) * 4, cudaHostAllocDefault),
        "allocating the pinned staging buffer");
  staging_dev_ = static_cast<int32_t*>(device_alloc(size_t(staging_elems_) * 4, "the step's index arrays"));
  B_.staging = staging_dev_;
  buffer_bytes_ += uint64_t(staging_elems_) * 4;
  // Device sampling: the sampled ids and logprobs of the largest step, and the batch's buffers, first sized for
  // penalty lists of 256 ids a row (grown when a batch needs more).
  check(cudaHostAlloc(reinterpret_cast<void**>(&sample_out_host_), size_t(R) * 8, cudaHostAllocDefault),
        "allocating the pinned buffer of sampled tokens");
  sample_out_dev_ = static_cast<int32_t*>(device_alloc(size_t(R) * 8, "the sampled tokens"));
  grow_sample_staging(cuda_sample_layout(int32_t(R), size_t(R) * 256, size_t(R) * 256).total);
  buffer_bytes_ += uint64_t(R) * 8 + sample_capacity_;
  if (cuda::sample_split_min_slice() > 0) {  // FLINT_SAMPLE=split: small batches' rows over several blocks
    sample_workspace_bytes_ = cuda::sample_workspace_bytes(int(R));
    sample_workspace_ = device_alloc(sample_workspace_bytes_, "the split sampler's workspace");
    buffer_bytes_ += sample_workspace_bytes_;
  }
}

void CudaBackend::allocate_kv_cache(const CudaBackendOptions& options) {
  const ModelConfig& c = config_;
  const uint64_t per_block = cuda_kv_bytes_per_block(c, block_size_);
  int64_t blocks = 0;
  if (options.num_kv_blocks > 0) {
    blocks = options.num_kv_blocks;
  } else {
    uint64_t budget = options.kv_cache_memory;
    if (budget == 0) {
      size_t free_b = 0, total_b = 0;
      check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
      budget = cuda_default_kv_budget(free_b);
      if (options.log)
        std::fprintf(stderr, "cuda backend: KV cache budget %.2f GiB = %.0f%% of the %.2f GiB free (--kv-cache-memory sets it)\n",
                     gib(budget), kCudaDefaultKvFraction * 100, gib(free_b));
    }
    blocks = cuda_kv_blocks_for_bytes(budget, c, block_size_);
    if (blocks < 1)
      fail("cuda backend: a KV cache of ", budget, " bytes holds less than one block (", per_block, " bytes for ",
           block_size_, " tokens)");
  }
  num_blocks_ = int32_t(blocks);
  const int64_t total_blocks = num_blocks_;
  kv_bytes_ = uint64_t(total_blocks) * per_block;
  auto* base = static_cast<bf16_bits*>(device_alloc(kv_bytes_, "the KV cache"));
  const int64_t layer_elems = total_blocks * block_size_ * int64_t(c.num_kv_heads) * c.head_dim;  // one of K, V
  for (int l = 0; l < c.num_layers; ++l) {
    bf16_bits* k = base + int64_t(2 * l) * layer_elems;
    PagedKvCache cache = make_paged_kv_cache(k, k + layer_elems, int32_t(total_blocks), block_size_, c.num_kv_heads,
                                             c.head_dim);
    if (std::string why = paged_kv_cache_error(cache); !why.empty()) fail("cuda backend: ", why);
    layers_[size_t(l)].cache = cache;
  }
}

// Errors after which the CUDA context is unusable: every later call in this process fails the same way (a kernel
// faulted: the CUDA runtime documents these as leaving the process in an inconsistent state).
static bool cuda_error_is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
    case cudaErrorContextIsDestroyed:
      return true;
    default:
      return false;
  }
}

// Captures with programmatic dependent launch when it is on (kernels/cuda/launch.cuh); a driver that refuses it in
// stream capture fails the capture without harming the context: then PDL goes off and the graphs are captured
// again with plain launches, so the backend serves either way.
void CudaBackend::capture_graphs() {
  try {
    capture_graphs_once();
  } catch (const Error& e) {
    if (!cuda::pdl_enabled() || cuda_error_is_sticky(cudaStreamSynchronize(stream_))) throw;
    for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
    graphs_.clear();
    (void)cudaGetLastError();
    cuda::pdl_disable(std::string("CUDA graph capture failed with it: ") + e.what());
    capture_graphs_once();
  }
}

void CudaBackend::capture_graphs_once() {
  const auto t0 = std::chrono::steady_clock::now();
  const StepPlan empty;  // every row a padding row: the cache is neither read nor written
  // One graph per (batch bucket, table width), in that order: graphs_[bucket · widths_.size() + width].
  for (int32_t b : buckets_) for (int32_t w : widths_) {
    int64_t elems = 0;
    const StepShape shape = cuda_prepare_step(empty, b, w, block_size_, staging_host_, &elems);
    check(cudaMemcpyAsync(staging_dev_, staging_host_, size_t(elems) * 4, cudaMemcpyHostToDevice, stream_),
          "uploading a graph bucket's inputs");
    enqueue_forward(shape, nullptr);  // eager once first: launchers set their one-time attributes outside capture
    check(cudaStreamSynchronize(stream_), "the warm-up step before graph capture");
    cudaGraph_t graph = nullptr;
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    try {
      enqueue_forward(shape, nullptr);
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);  // leave capture mode before reporting
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    check(cudaStreamEndCapture(stream_, &graph), "cudaStreamEndCapture");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check(e, "cudaGraphInstantiate");
    graphs_.push_back(exec);
    check(cudaGraphLaunch(exec, stream_), "the first replay of a decode graph");
    check(cudaStreamSynchronize(stream_), "the first replay of a decode graph");
  }
  capture_seconds_ = seconds_since(t0);
}


template <class F>
void CudaBackend::guarded(F&& step) {
  if (!fatal_.empty()) fail("cuda backend: unusable since an earlier step failed: ", fatal_);
  try {
    step();
  } catch (...) {
    if (step_profiled_) {  // let the hold go: the step's queued work must not wait for a release that never comes
      profiler_.release();
      step_profiled_ = false;
    }
    // A launch or copy error may be the sign of a fault that poisoned the context: ask the stream.
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (cuda_error_is_sticky(e)) fatal_ = std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
    throw;
  }
}

void CudaBackend::forward(const StepPlan& plan, float* logits) {
  guarded([&] { forward_logits(plan, logits); });
}

void CudaBackend::forward_sample(const StepPlan& plan, const cpu::SampleBatch& batch, int32_t* token_ids,
                                 float* logprobs) {
  guarded([&] { forward_and_sample(plan, batch, token_ids, logprobs); });
}

void CudaBackend::forward_logits(const StepPlan& plan, float* logits) {
  const int32_t rows = int32_t(plan.logit_rows.size());
  if (!enqueue_step(plan)) return;
  // Logit row i is at row i of the logits buffer (eager: gathered in plan order; graph: decode rows are 0..n-1 in order).
  if (rows > 0)
    check(cudaMemcpyAsync(logits, B_.logits, size_t(rows) * size_t(config_.vocab_size) * sizeof(float),
                          cudaMemcpyDeviceToHost, stream_),
          "copying the logits back");
  profile_end_step();
  check(cudaStreamSynchronize(stream_), "the forward step");
  profile_collect();
}

void CudaBackend::forward_and_sample(const StepPlan& plan, const cpu::SampleBatch& batch, int32_t* token_ids,
                                     float* logprobs) {
  const int32_t rows = int32_t(plan.logit_rows.size());
  if (batch.num_rows() != rows) fail("cuda backend: ", batch.num_rows(), " sampling rows for ", rows, " logit rows");
  // Checked (the rows' parameters, the lists' shape) and packed before anything is queued.
  const cpu::PenaltyLists& pl = batch.penalties;
  const size_t bytes = cuda_sample_layout(rows, pl.rep_ids.size(), pl.freq_ids.size()).total;
  if (bytes > sample_capacity_) grow_sample_staging(bytes);  // the previous step has finished: nothing reads it
  CudaSampleLayout layout;
  try {
    layout = cuda_pack_sample_batch(batch, sample_host_, sample_capacity_);
  } catch (const Error& e) {
    fail("cuda backend: ", e.what());
  }
  if (!enqueue_step(plan)) return;
  if (rows == 0) {
    profile_end_step();
    check(cudaStreamSynchronize(stream_), "the forward step");
    profile_collect();
    return;
  }
  check(cudaMemcpyAsync(sample_dev_, sample_host_, layout.total, cudaMemcpyHostToDevice, stream_),
        "uploading the sampling batch");
  // Logit row i is at row i of the logits buffer, as forward() copies them back; the penalties apply in place.
  SampleParams p = cuda_sample_params(layout, rows, sample_dev_, B_.logits, config_.vocab_size, sample_out_dev_,
                                      logprobs ? reinterpret_cast<float*>(sample_out_dev_ + max_logit_rows_) : nullptr);
  p.maybe_workspace = sample_workspace_, p.workspace_bytes = sample_workspace_bytes_;
  p.maybe_host_rows = reinterpret_cast<const SampleRow*>(sample_host_ + layout.rows);
  std::string why;
  if (step_profiled_) profiler_.op_begin("sampling", stream_);
  check_op(cuda::sample(p, stream_, &why), "sampling", why);
  if (step_profiled_) profiler_.op_end(stream_);
  check(cudaMemcpyAsync(sample_out_host_, sample_out_dev_, size_t(max_logit_rows_) * 8, cudaMemcpyDeviceToHost, stream_),
        "copying the sampled tokens back");
  profile_end_step();
  check(cudaStreamSynchronize(stream_), "the forward step and its sampling");
  profile_collect();
  std::copy_n(sample_out_host_, rows, token_ids);
  if (logprobs) std::memcpy(logprobs, sample_out_host_ + max_logit_rows_, size_t(rows) * sizeof(float));
}

void CudaBackend::profile_end_step() {
  if (step_profiled_) profiler_.end_step(stream_);
}

void CudaBackend::profile_collect() {
  if (!step_profiled_) return;
  step_profiled_ = false;
  profiler_.collect();
}

void CudaBackend::grow_sample_staging(size_t bytes) {
  check(cudaStreamSynchronize(stream_), "the step before growing the sampling buffers");
  const size_t capacity = std::max(bytes, 2 * sample_capacity_);
  if (sample_host_) cudaFreeHost(sample_host_);
  if (sample_dev_) cudaFree(sample_dev_);
  sample_host_ = nullptr, sample_dev_ = nullptr, sample_capacity_ = 0;
  check(cudaHostAlloc(reinterpret_cast<void**>(&sample_host_), capacity, cudaHostAllocDefault),
        "allocating the pinned sampling buffer");
  check(cudaMalloc(reinterpret_cast<void**>(&sample_dev_), capacity), "allocating the device sampling buffer");
  sample_capacity_ = capacity;
}

bool CudaBackend::enqueue_step(const StepPlan& plan) {
  // The current device is per host thread, and the engine calls from its own thread, not the constructor's.
  check(cudaSetDevice(device_), "cudaSetDevice");
  plan.validate(block_size_, num_blocks_);
  const int32_t n = plan.num_tokens(), s = plan.num_seqs(), rows = int32_t(plan.logit_rows.size());
  if (n == 0) return false;
  if (n > max_tokens_) fail("cuda backend: a step of ", n, " tokens exceeds max_tokens_per_step ", max_tokens_);
  if (s > max_seqs_) fail("cuda backend: a step of ", s, " sequences exceeds max_seqs_per_step ", max_seqs_);
  if (rows > max_logit_rows_)
    fail("cuda backend: a step wants ", rows, " logit rows, more than the ", max_logit_rows_,
         " its buffers hold (max_logit_rows_per_step)");
  if (plan.max_blocks_per_seq > table_width_)
    fail("cuda backend: a sequence spans ", plan.max_blocks_per_seq, " KV blocks, more than the ", table_width_,
         " the block table holds (the model's context, or the KV cache when smaller)");
  for (int32_t id : plan.token_ids)
    if (id < 0 || id >= config_.vocab_size) fail("token id ", id, " outside the vocabulary [0, ", config_.vocab_size, ")");

  step_profiled_ = profiling_ && !observer_;
  const int32_t bucket = graphs_.empty() || observer_ || step_profiled_ || !is_decode_only(plan)
                             ? -1
                             : cuda_pick_graph_bucket(buckets_, s);
  // The narrowest captured table that holds the step's longest sequence (widths_ ends with table_width_).
  const int32_t width = bucket < 0 ? -1 : cuda_pick_graph_bucket(widths_, std::max(plan.max_blocks_per_seq, 1));
  int64_t elems = 0;
  const StepShape shape = cuda_prepare_step(plan, bucket >= 0 ? buckets_[size_t(bucket)] : 0,
                                            bucket >= 0 ? widths_[size_t(width)] : table_width_, block_size_,
                                            staging_host_, &elems);
  if (step_profiled_) profiler_.begin_step(stream_);  // the step's work queues behind its hold
  check(cudaMemcpyAsync(staging_dev_, staging_host_, size_t(elems) * 4, cudaMemcpyHostToDevice, stream_),
        "uploading the step's inputs");
  if (bucket >= 0)
    check(cudaGraphLaunch(graphs_[size_t(bucket) * widths_.size() + size_t(width)], stream_), "replaying a decode graph");
  else
    enqueue_forward(shape, &plan);
  return true;
}

// The launchers on the backend's stream, each result checked; the observer's copies back to the host.
struct CudaOps {
  CudaBackend& b;
  const StepPlan* plan;  // for observe_kv; null while capturing (no observer then)
  std::string why;

  // Queues one op (between the profiler's events in a profiled step) and checks its launch.
  template <class Launch>
  void op(const char* what, Launch&& launch) {
    if (b.step_profiled_) b.profiler_.op_begin(what, b.stream_);
    check_op(launch(), what, why);
    if (b.step_profiled_) b.profiler_.op_end(b.stream_);
  }
  void embedding(const EmbeddingParams& p, const char* what) {
    op(what, [&] { return cuda::embedding(p, b.stream_, &why); });
  }
  void add_rmsnorm(const AddRmsNormParams& p, const char* what) {
    op(what, [&] { return cuda::add_rmsnorm(p, b.stream_, &why); });
  }
  int matmul(const MatmulParams& p, const char* what) {
    int partials = 0;
    op(what, [&] { return cuda::matmul(p, b.stream_, cuda::MatmulKernel::Auto, &why, &partials); });
    return partials;
  }
  void rope_write_kv(const RopeKvParams& p, const char* what) {
    op(what, [&] { return cuda::rope_write_kv(p, b.stream_, &why); });
  }
  void paged_attention(const AttentionParams& p, const char* what) {
    op(what, [&] { return cuda::paged_attention(p, b.stream_, &why); });
  }
  bool observing() const { return bool(b.observer_); }

  template <class T>
  std::vector<T> download(const void* src, size_t count) {
    std::vector<T> host(count);
    check(cudaMemcpyAsync(host.data(), src, count * sizeof(T), cudaMemcpyDeviceToHost, b.stream_), "observer copy");
    check(cudaStreamSynchronize(b.stream_), "observer copy");
    return host;
  }
  void observe(const std::string& name, const void* data, bool bf16, int64_t rows, int64_t cols) {
    const size_t count = size_t(rows) * size_t(cols);
    std::vector<float> host;
    if (bf16) {
      const std::vector<bf16_bits> raw = download<bf16_bits>(data, count);
      host.resize(count);
      for (size_t i = 0; i < count; ++i) host[i] = bf16_bits_to_f32(raw[i]);
    } else {
      host = download<float>(data, count);
    }
    b.observer_(name, host.data(), rows, cols);
  }
  // K or V of every token of the plan, read back from the cache slots rope_write_kv stored them in (RoPE applied
  // to K), in token order: (num_tokens, num_kv_heads · head_dim), as the CPU backend reports them.
  void observe_kv(const std::string& name, int layer, bool is_v) {
    const PagedKvCache& cache = b.layers_[size_t(layer)].cache;
    const bf16_bits* base = is_v ? cache.v : cache.k;
    const int32_t nkv = cache.num_kv_heads, hd = cache.head_dim, n = plan->num_tokens(), bs = cache.block_size;
    std::vector<bf16_bits> raw(size_t(n) * size_t(nkv) * size_t(hd));
    for (int32_t s = 0; s < plan->num_seqs(); ++s) {
      for (int32_t t = plan->cu_seqlens[size_t(s)]; t < plan->cu_seqlens[size_t(s) + 1]; ++t) {
        const int32_t pos = plan->positions[size_t(t)];
        const int32_t block = plan->block_table[size_t(s) * size_t(plan->max_blocks_per_seq) + size_t(pos / bs)];
        for (int32_t h = 0; h < nkv; ++h)
          check(cudaMemcpyAsync(raw.data() + (int64_t(t) * nkv + h) * hd, base + cache.offset(block, pos % bs, h),
                                size_t(hd) * 2, cudaMemcpyDeviceToHost, b.stream_),
                "observer copy of the KV cache");
      }
    }
    check(cudaStreamSynchronize(b.stream_), "observer copy of the KV cache");
    std::vector<float> host(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) host[i] = bf16_bits_to_f32(raw[i]);
    b.observer_(name, host.data(), n, int64_t(nkv) * hd);
  }
  // x + delta, added on the host as add_rmsnorm adds it (fp32).
  void observe_sum(const std::string& name, const float* x, const float* delta, int64_t rows, int64_t cols) {
    const size_t count = size_t(rows) * size_t(cols);
    std::vector<float> sum = download<float>(x, count);
    const std::vector<float> d = download<float>(delta, count);
    for (size_t i = 0; i < count; ++i) sum[i] += d[i];
    b.observer_(name, sum.data(), rows, cols);
  }
};

void CudaBackend::enqueue_forward(const StepShape& shape, const StepPlan* plan) {
  CudaOps ops{*this, plan, {}};
  run_forward(config_, layers_, B_, shape, ops);
}

}  // namespace flint
