// The decoder-only transformer forward pass on the GPU, composed from kernels/cuda. Every CUDA call and launcher
// result is checked and turned into a flint::Error naming what failed; nothing falls back silently.
#include "model/cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "common/error.h"
#include "kernels/bf16.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/ops.h"
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
  max_logit_rows_ = max_seqs_;  // one sampled row per sequence at most
  table_width_ = (config_.max_context + block_size_ - 1) / block_size_;

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

  if (options.log) std::fprintf(stderr, "cuda backend: %s, %s\n", device_name_.c_str(), config_.describe().c_str());
  upload_weights(weights);
  allocate_buffers();
  allocate_kv_cache(options);
  if (options.log)
    std::fprintf(stderr, "cuda backend: weights %.2f GiB, buffers %.2f GiB, KV cache %d blocks x %d tokens (%.2f GiB)\n",
                 gib(weight_bytes_), gib(buffer_bytes_), num_blocks_, block_size_, gib(kv_bytes_));
  buckets_ = cuda_graph_buckets(max_seqs_);
  if (options.cuda_graphs) {
    capture_graphs();
    if (options.log)
      std::fprintf(stderr, "cuda backend: captured %zu decode graphs (batch %d..%d) in %.2f s\n", graphs_.size(),
                   buckets_.front(), buckets_.back(), capture_seconds_);
  } else if (options.log) {
    std::fprintf(stderr, "cuda backend: CUDA graphs off: every step runs eagerly\n");
  }
  if (options.log) std::fprintf(stderr, "cuda backend: ready in %.2f s\n", seconds_since(t0));
}

CudaBackend::~CudaBackend() {
  // No throwing here: errors on the way out are ignored (the process is usually ending).
  if (stream_) cudaStreamSynchronize(stream_);
  for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
  for (void* p : allocations_) cudaFree(p);
  if (staging_host_) cudaFreeHost(staging_host_);
  if (stream_) cudaStreamDestroy(stream_);
}

std::string CudaBackend::describe() const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s; weights %.2f GiB bf16; KV cache %d blocks x %d tokens (%.2f GiB); %s",
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
    bf16_bits** dst;
  };
  std::vector<Job> jobs;
  layers_.resize(size_t(c.num_layers));
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = weights.layers[size_t(l)];
    DeviceLayer& dl = layers_[size_t(l)];
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
  jobs.push_back({pack_plain(*weights.tok_embd), &tok_embd_});
  jobs.push_back({pack_plain(*weights.output_norm), &output_norm_});
  const bool tied = weights.output == weights.tok_embd;
  if (!tied) jobs.push_back({pack_plain(*weights.output), &output_});

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
  if (tied) output_ = tok_embd_;
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
  inv_freq_ = static_cast<float*>(device_alloc(inv_freq.size() * sizeof(float), "rope inv_freq"));
  check(cudaMemcpyAsync(inv_freq_, inv_freq.data(), inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice, stream_),
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
  x_ = f32_buf(T * hidden, "the residual stream");
  h_ = bf16_buf(T * hidden, "the norm output");
  q_ = bf16_buf(T * nq, "q");
  k_ = bf16_buf(T * nkv, "k");
  v_ = bf16_buf(T * nkv, "v");
  attn_ = bf16_buf(T * nq, "the attention output");
  proj_ = bf16_buf(T * hidden, "the projection output");
  act_ = bf16_buf(T * ffn, "the MLP activation");
  gx_ = f32_buf(R * hidden, "the gathered residual rows");
  gp_ = bf16_buf(R * hidden, "the gathered projection rows");
  gh_ = bf16_buf(R * hidden, "the final norm rows");
  logits_ = f32_buf(R * int64_t(c.vocab_size), "the logits");
  // Workspaces for the largest step: split-K partial sums grow with M, so the largest M of each shape decides.
  const int M = int(T);
  for (auto [m, n, k] : {std::tuple{M, int(nq + 2 * nkv), int(hidden)}, std::tuple{M, int(hidden), int(nq)},
                         std::tuple{M, int(2 * ffn), int(hidden)}, std::tuple{M, int(hidden), int(ffn)},
                         std::tuple{int(R), c.vocab_size, int(hidden)}})
    matmul_ws_bytes_ = std::max(matmul_ws_bytes_, cuda::matmul_workspace_bytes(m, n, k, cuda::MatmulKernel::Auto));
  if (matmul_ws_bytes_) matmul_ws_ = device_alloc(matmul_ws_bytes_, "the matmul workspace");
  attn_ws_bytes_ = attention_workspace_bytes(max_seqs_, c.num_qo_heads, c.head_dim, table_width_ * block_size_);
  if (attn_ws_bytes_) attn_ws_ = device_alloc(attn_ws_bytes_, "the attention workspace");
  buffer_bytes_ += matmul_ws_bytes_ + attn_ws_bytes_;
  // The index arrays of the largest step (a graph bucket's layout is never larger: b <= max_seqs <= max_tokens).
  staging_elems_ = cuda_step_layout(max_tokens_, max_seqs_, table_width_, max_logit_rows_).total;
  check(cudaHostAlloc(reinterpret_cast<void**>(&staging_host_), size_t(staging_elems_) * 4, cudaHostAllocDefault),
        "allocating the pinned staging buffer");
  staging_dev_ = static_cast<int32_t*>(device_alloc(size_t(staging_elems_) * 4, "the step's index arrays"));
  buffer_bytes_ += uint64_t(staging_elems_) * 4;
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
    caches_.push_back(cache);
  }
}

void CudaBackend::capture_graphs() {
  const auto t0 = std::chrono::steady_clock::now();
  const StepPlan empty;  // every row a padding row: the cache is neither read nor written
  for (int32_t b : buckets_) {
    const StepLayout layout = cuda_step_layout(b, b, table_width_, b);
    cuda_fill_staging(empty, layout, table_width_, b, staging_host_);
    StepShape shape{b, b, b, table_width_, 1, table_width_ * block_size_, layout.token_ids, layout.positions,
                    layout.cu_seqlens, layout.kv_lens, layout.block_table, layout.logit_rows};
    check(cudaMemcpyAsync(staging_dev_, staging_host_, size_t(layout.total) * 4, cudaMemcpyHostToDevice, stream_),
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

void CudaBackend::forward(const StepPlan& plan, float* logits) {
  // The current device is per host thread, and the engine calls from its own thread, not the constructor's.
  check(cudaSetDevice(device_), "cudaSetDevice");
  plan.validate(block_size_, num_blocks_);
  const int32_t n = plan.num_tokens(), s = plan.num_seqs(), rows = int32_t(plan.logit_rows.size());
  if (n == 0) return;
  if (n > max_tokens_) fail("cuda backend: a step of ", n, " tokens exceeds max_tokens_per_step ", max_tokens_);
  if (s > max_seqs_) fail("cuda backend: a step of ", s, " sequences exceeds max_seqs_per_step ", max_seqs_);
  if (rows > max_logit_rows_)
    fail("cuda backend: a step wants ", rows, " logit rows, more than max_seqs_per_step ", max_logit_rows_);
  for (int32_t id : plan.token_ids)
    if (id < 0 || id >= config_.vocab_size) fail("token id ", id, " outside the vocabulary [0, ", config_.vocab_size, ")");

  const int32_t bucket = graphs_.empty() || observer_ || !is_decode_only(plan) ? -1
                                                                               : cuda_pick_graph_bucket(buckets_, s);
  if (bucket >= 0) {
    const int32_t b = buckets_[size_t(bucket)];
    const StepLayout layout = cuda_step_layout(b, b, table_width_, b);
    cuda_fill_staging(plan, layout, table_width_, b, staging_host_);
    check(cudaMemcpyAsync(staging_dev_, staging_host_, size_t(layout.total) * 4, cudaMemcpyHostToDevice, stream_),
          "uploading the step's inputs");
    check(cudaGraphLaunch(graphs_[size_t(bucket)], stream_), "replaying a decode graph");
  } else {
    const int32_t width = std::max(plan.max_blocks_per_seq, 1);
    const StepLayout layout = cuda_step_layout(n, s, width, rows);
    const StepMaxima m = cuda_fill_staging(plan, layout, width, 0, staging_host_);
    check(cudaMemcpyAsync(staging_dev_, staging_host_, size_t(layout.total) * 4, cudaMemcpyHostToDevice, stream_),
          "uploading the step's inputs");
    StepShape shape{n, s, rows, width, m.max_q_len, m.max_kv_len, layout.token_ids, layout.positions,
                    layout.cu_seqlens, layout.kv_lens, layout.block_table, layout.logit_rows};
    enqueue_forward(shape, &plan);
  }
  // Logit row i is at row i of logits_ (eager: gathered in plan order; graph: decode rows are 0..n-1 in order).
  if (rows > 0)
    check(cudaMemcpyAsync(logits, logits_, size_t(rows) * size_t(config_.vocab_size) * sizeof(float),
                          cudaMemcpyDeviceToHost, stream_),
          "copying the logits back");
  check(cudaStreamSynchronize(stream_), "the forward step");
}

void CudaBackend::enqueue_forward(const StepShape& sh, const StepPlan* plan) {
  const ModelConfig& c = config_;
  const int32_t n = sh.num_tokens, hidden = c.hidden_size, ffn = c.ffn_size, hd = c.head_dim;
  const int32_t nq = c.num_qo_heads * hd, nkv = c.num_kv_heads * hd;
  const int32_t* d = staging_dev_;
  std::string why;

  EmbeddingParams emb;
  emb.num_tokens = n;
  emb.ids = d + sh.layout_token_ids;
  emb.vocab = c.vocab_size;
  emb.hidden = hidden;
  emb.table = tok_embd_;
  emb.ld_table = hidden;
  emb.out_type = ActType::F32;
  emb.out = x_;
  emb.ld_out = hidden;
  check_op(cuda::embedding(emb, stream_, &why), "embedding", why);
  if (observer_) observe("embedding", x_, false, n, hidden);

  AttentionBatch batch;
  batch.cu_seqlens = d + sh.layout_cu_seqlens;
  batch.kv_lens = d + sh.layout_kv_lens;
  batch.block_table = d + sh.layout_block_table;
  batch.max_blocks_per_seq = sh.table_width;
  batch.positions = d + sh.layout_positions;
  batch.num_seqs = sh.num_seqs;
  batch.num_tokens = n;
  batch.max_q_len = sh.max_q_len;
  batch.max_kv_len = sh.max_kv_len;

  auto norm = [&](const bf16_bits* maybe_delta, const bf16_bits* w, const char* what) {
    AddRmsNormParams p;
    p.num_rows = n;
    p.hidden = hidden;
    p.x = x_;
    p.ldx = hidden;
    p.maybe_delta = maybe_delta;
    p.ld_delta = hidden;
    p.w = w;
    p.out = h_;
    p.ld_out = hidden;
    p.eps = c.rms_eps;
    check_op(cuda::add_rmsnorm(p, stream_, &why), what, why);
  };
  auto matmul = [&](MatmulParams p, const char* what) {
    p.workspace = matmul_ws_;
    p.workspace_bytes = matmul_ws_bytes_;
    check_op(cuda::matmul(p, stream_, cuda::MatmulKernel::Auto, &why), what, why);
  };
  auto lname = [](int l, const char* what) { return "layer." + std::to_string(l) + "." + what; };

  for (int l = 0; l < c.num_layers; ++l) {
    const DeviceLayer& L = layers_[size_t(l)];
    // Attention block. x += proj (the previous layer's MLP output) fused with this layer's first norm.
    norm(l == 0 ? nullptr : proj_, L.attn_norm, "attention norm");
    if (observer_ && l > 0) observe(lname(l - 1, "out"), x_, false, n, hidden);
    MatmulParams qkv;
    qkv.M = n, qkv.N = nq + 2 * nkv, qkv.K = hidden;
    qkv.x = h_, qkv.ldx = hidden, qkv.w = L.qkv, qkv.ldw = hidden, qkv.maybe_bias = L.maybe_qkv_bias;
    qkv.epilogue = MatmulEpilogue::Qkv;
    qkv.y = q_, qkv.ldy = nq, qkv.num_q = nq, qkv.num_kv = nkv;
    qkv.k_out = k_, qkv.ld_k = nkv, qkv.v_out = v_, qkv.ld_v = nkv;
    matmul(qkv, "qkv matmul");

    RopeKvParams rope;
    rope.cache = caches_[size_t(l)];
    rope.batch = batch;
    rope.q = q_, rope.ld_q = nq, rope.k = k_, rope.ld_k = nkv, rope.v = v_, rope.ld_v = nkv;
    rope.num_qo_heads = c.num_qo_heads;
    rope.inv_freq = inv_freq_;
    rope.style = c.rope_style;
    rope.maybe_q_norm = L.maybe_q_norm;
    rope.maybe_k_norm = L.maybe_k_norm;
    rope.norm_eps = c.rms_eps;
    check_op(cuda::rope_write_kv(rope, stream_, &why), "rope_write_kv", why);
    if (observer_) {
      observe(lname(l, "q"), q_, true, n, nq);
      observe_kv(lname(l, "k"), caches_[size_t(l)].k, *plan);
      observe_kv(lname(l, "v"), caches_[size_t(l)].v, *plan);
    }

    AttentionParams attn;
    attn.cache = caches_[size_t(l)];
    attn.batch = batch;
    attn.q = q_, attn.ld_q = nq, attn.out = attn_, attn.ld_out = nq;
    attn.num_qo_heads = c.num_qo_heads;
    attn.scale = 1.0f / std::sqrt(float(hd));
    attn.workspace = attn_ws_, attn.workspace_bytes = attn_ws_bytes_;
    check_op(cuda::paged_attention(attn, stream_, &why), "paged_attention", why);
    if (observer_) observe(lname(l, "attn"), attn_, true, n, nq);

    MatmulParams wo;
    wo.M = n, wo.N = hidden, wo.K = nq;
    wo.x = attn_, wo.ldx = nq, wo.w = L.wo, wo.ldw = nq, wo.y = proj_, wo.ldy = hidden;
    matmul(wo, "attention output matmul");

    // MLP block: x += proj fused with the MLP norm; then silu(gate) · up in the gate+up matmul's epilogue.
    norm(proj_, L.ffn_norm, "mlp norm");
    if (observer_) observe(lname(l, "attn_residual"), x_, false, n, hidden);
    MatmulParams gu;
    gu.M = n, gu.N = 2 * ffn, gu.K = hidden;
    gu.x = h_, gu.ldx = hidden, gu.w = L.gate_up, gu.ldw = hidden;
    gu.epilogue = MatmulEpilogue::SiluMul;
    gu.y = act_, gu.ldy = ffn;
    matmul(gu, "gate+up matmul");
    MatmulParams down;
    down.M = n, down.N = hidden, down.K = ffn;
    down.x = act_, down.ldx = ffn, down.w = L.down, down.ldw = ffn, down.y = proj_, down.ldy = hidden;
    matmul(down, "down matmul");
  }
  if (observer_) {  // the last layer's out = x + proj, added on the host as add_rmsnorm adds it (fp32 + float(bf16))
    std::vector<float> x(size_t(n) * size_t(hidden));
    std::vector<bf16_bits> p(x.size());
    check(cudaMemcpyAsync(x.data(), x_, x.size() * 4, cudaMemcpyDeviceToHost, stream_), "observer copy");
    check(cudaMemcpyAsync(p.data(), proj_, p.size() * 2, cudaMemcpyDeviceToHost, stream_), "observer copy");
    check(cudaStreamSynchronize(stream_), "observer copy");
    for (size_t i = 0; i < x.size(); ++i) x[i] += bf16_bits_to_f32(p[i]);
    observer_(lname(c.num_layers - 1, "out"), x.data(), n, hidden);
  }

  // Logits only for the rows that sample: gather x and the last projection, add + final norm, LM head.
  const int32_t rows = sh.num_logit_rows;
  if (rows == 0) return;
  GatherRowsParams g;
  g.num_rows = rows;
  g.row_ids = d + sh.layout_logit_rows;
  g.num_src_rows = n;
  g.row_elems = hidden;
  g.type = ActType::F32, g.src = x_, g.ld_src = hidden, g.dst = gx_, g.ld_dst = hidden;
  check_op(cuda::gather_rows(g, stream_, &why), "gather_rows (residual)", why);
  g.type = ActType::BF16, g.src = proj_, g.dst = gp_;
  check_op(cuda::gather_rows(g, stream_, &why), "gather_rows (projection)", why);
  AddRmsNormParams fn;
  fn.num_rows = rows;
  fn.hidden = hidden;
  fn.x = gx_, fn.ldx = hidden, fn.maybe_delta = gp_, fn.ld_delta = hidden;
  fn.w = output_norm_, fn.out = gh_, fn.ld_out = hidden, fn.eps = c.rms_eps;
  check_op(cuda::add_rmsnorm(fn, stream_, &why), "final norm", why);
  if (observer_) observe("final_norm", gh_, true, rows, hidden);
  MatmulParams head;
  head.M = rows, head.N = c.vocab_size, head.K = hidden;
  head.x = gh_, head.ldx = hidden, head.w = output_, head.ldw = hidden;
  head.out_type = MatmulOut::F32;
  head.y = logits_, head.ldy = c.vocab_size;
  matmul(head, "lm head");
}

void CudaBackend::observe(const std::string& name, const void* device_data, bool bf16, int64_t rows, int64_t cols) {
  const size_t count = size_t(rows) * size_t(cols);
  std::vector<float> host(count);
  if (bf16) {
    std::vector<bf16_bits> raw(count);
    check(cudaMemcpyAsync(raw.data(), device_data, count * 2, cudaMemcpyDeviceToHost, stream_), "observer copy");
    check(cudaStreamSynchronize(stream_), "observer copy");
    for (size_t i = 0; i < count; ++i) host[i] = bf16_bits_to_f32(raw[i]);
  } else {
    check(cudaMemcpyAsync(host.data(), device_data, count * 4, cudaMemcpyDeviceToHost, stream_), "observer copy");
    check(cudaStreamSynchronize(stream_), "observer copy");
  }
  observer_(name, host.data(), rows, cols);
}

// K or V of every token of the plan, read back from the cache slots rope_write_kv stored them in (RoPE applied to
// K), in token order: (num_tokens, num_kv_heads · head_dim), as the CPU backend reports them.
void CudaBackend::observe_kv(const std::string& name, const bf16_bits* cache_base, const StepPlan& plan) {
  const PagedKvCache& layout = caches_.front();  // every layer has the same strides
  const int32_t nkv = config_.num_kv_heads, hd = config_.head_dim, n = plan.num_tokens();
  std::vector<bf16_bits> raw(size_t(n) * size_t(nkv) * size_t(hd));
  for (int32_t s = 0; s < plan.num_seqs(); ++s) {
    for (int32_t t = plan.cu_seqlens[size_t(s)]; t < plan.cu_seqlens[size_t(s) + 1]; ++t) {
      const int32_t pos = plan.positions[size_t(t)];
      const int32_t block = plan.block_table[size_t(s) * size_t(plan.max_blocks_per_seq) + size_t(pos / block_size_)];
      for (int32_t h = 0; h < nkv; ++h)
        check(cudaMemcpyAsync(raw.data() + (int64_t(t) * nkv + h) * hd, cache_base + layout.offset(block, pos % block_size_, h),
                              size_t(hd) * 2, cudaMemcpyDeviceToHost, stream_),
              "observer copy of the KV cache");
    }
  }
  check(cudaStreamSynchronize(stream_), "observer copy of the KV cache");
  std::vector<float> host(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) host[i] = bf16_bits_to_f32(raw[i]);
  observer_(name, host.data(), n, int64_t(nkv) * hd);
}

}  // namespace flint
