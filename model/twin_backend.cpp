#include "model/twin_backend.h"

#include <algorithm>

#include "common/error.h"
#include "kernels/bf16.h"
#include "kernels/cpu/attention_bf16.h"
#include "kernels/cpu/matmul_bf16.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/ops_bf16.h"
#include "model/cuda_backend_host.h"

namespace flint {

// The CPU twins in CudaOps' place (model/cuda_forward.h), host pointers throughout.
struct TwinOps {
  TwinBackend& b;
  void embedding(const EmbeddingParams& p, const char*) { cpu::embedding_bf16(p); }
  void add_rmsnorm(const AddRmsNormParams& p, const char*) { cpu::add_rmsnorm(p); }
  int matmul(const MatmulParams& p, const char*) {
    cpu::matmul_bf16(p);  // always writes y (leave_partials is the CUDA launcher's choice)
    return 0;
  }
  void rope_write_kv(const RopeKvParams& p, const char*) { cpu::rope_write_kv_bf16(p); }
  void paged_attention(const AttentionParams& p, const char*) { cpu::paged_attention_bf16(p); }
  bool observing() const { return bool(b.observer_); }
  void observe(const std::string& name, const void* data, bool bf16, int64_t rows, int64_t cols) {
    std::vector<float> host(size_t(rows) * size_t(cols));
    for (size_t i = 0; i < host.size(); ++i)
      host[i] = bf16 ? bf16_bits_to_f32(static_cast<const bf16_bits*>(data)[i]) : static_cast<const float*>(data)[i];
    b.observer_(name, host.data(), rows, cols);
  }
  void observe_kv(const std::string& name, int layer, bool is_v) {
    const PagedKvCache& c = b.layers_[size_t(layer)].cache;
    const StepPlan& plan = *b.plan_;
    std::vector<float> host(size_t(plan.num_tokens()) * size_t(c.num_kv_heads) * size_t(c.head_dim));
    for (int32_t s = 0; s < plan.num_seqs(); ++s)
      for (int32_t t = plan.cu_seqlens[size_t(s)]; t < plan.cu_seqlens[size_t(s) + 1]; ++t) {
        const int32_t pos = plan.positions[size_t(t)];
        const int32_t block = plan.block_table[size_t(s) * size_t(plan.max_blocks_per_seq) + size_t(pos / c.block_size)];
        for (int32_t h = 0; h < c.num_kv_heads; ++h)
          for (int32_t i = 0; i < c.head_dim; ++i)
            host[(size_t(t) * c.num_kv_heads + h) * c.head_dim + i] =
                bf16_bits_to_f32((is_v ? c.v : c.k)[c.offset(block, pos % c.block_size, h) + i]);
      }
    b.observer_(name, host.data(), plan.num_tokens(), int64_t(c.num_kv_heads) * c.head_dim);
  }
  void observe_sum(const std::string& name, const float* x, const float* delta, int64_t rows, int64_t cols) {
    std::vector<float> sum(x, x + rows * cols);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += delta[i];
    b.observer_(name, sum.data(), rows, cols);
  }
};

TwinBackend::TwinBackend(const ModelConfig& config, const ModelWeights& weights, const TwinBackendOptions& options)
    : config_(config), options_(options), block_size_(options.block_size) {
  config_.validate();
  const ModelConfig& c = config_;
  table_width_ = (c.max_context + block_size_ - 1) / block_size_;
  num_blocks_ = options.num_kv_blocks > 0 ? options.num_kv_blocks : table_width_;
  // Weights, packed as CudaBackend packs them, dequantized by the dequantize kernel's twin.
  auto pack = [&](const PackedWeight& w) -> const bf16_bits* {
    weights_.emplace_back(size_t(w.rows * w.cols));
    for (const PackPiece& piece : w.pieces)
      cpu::dequantize_bf16(pack_piece_params(w, piece, piece.src->data, weights_.back().data()));
    return weights_.back().data();
  };
  weights_.reserve(size_t(c.num_layers) * 9 + 3);  // pointers into weights_ must stay valid
  layers_.resize(size_t(c.num_layers));
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = weights.layers[size_t(l)];
    ForwardLayer& L = layers_[size_t(l)];
    L.qkv = pack(pack_qkv(lw, c));
    if (PackedWeight b = pack_qkv_bias(lw, c); b.rows > 0) L.maybe_qkv_bias = pack(b);
    L.wo = pack(pack_plain(*lw.wo));
    L.gate_up = pack(pack_gate_up(lw, c));
    L.down = pack(pack_plain(*lw.w_down));
    L.attn_norm = pack(pack_plain(*lw.attn_norm));
    L.ffn_norm = pack(pack_plain(*lw.ffn_norm));
    if (lw.maybe_q_norm) L.maybe_q_norm = pack(pack_plain(*lw.maybe_q_norm));
    if (lw.maybe_k_norm) L.maybe_k_norm = pack(pack_plain(*lw.maybe_k_norm));
  }
  B_.tok_embd = pack(pack_plain(*weights.tok_embd));
  B_.output_norm = pack(pack_plain(*weights.output_norm));
  B_.output = weights.output == weights.tok_embd ? B_.tok_embd : pack(pack_plain(*weights.output));
  cpu::RopeParams rope;
  rope.head_dim = c.head_dim;
  rope.theta = c.rope_theta;
  rope.style = c.rope_style;
  rope.scaling_factor = c.rope_scaling.factor;
  rope.low_freq_factor = c.rope_scaling.low_freq_factor;
  rope.high_freq_factor = c.rope_scaling.high_freq_factor;
  rope.original_max_position = c.rope_scaling.original_max_position;
  inv_freq_.resize(size_t(c.head_dim / 2));
  cpu::rope_inv_freq(rope, inv_freq_.data());
  B_.inv_freq = inv_freq_.data();
  // KV cache: all layers in one buffer, as CudaBackend lays it out.
  const int64_t layer_elems = int64_t(num_blocks_) * block_size_ * c.num_kv_heads * c.head_dim;
  kv_.assign(size_t(2 * layer_elems * c.num_layers), 0);
  for (int l = 0; l < c.num_layers; ++l) {
    bf16_bits* k = kv_.data() + 2 * l * layer_elems;
    layers_[size_t(l)].cache = make_paged_kv_cache(k, k + layer_elems, num_blocks_, block_size_, c.num_kv_heads, c.head_dim);
  }
  // Buffers for the largest step.
  const int64_t T = options.max_tokens_per_step, R = options.max_seqs_per_step, hidden = c.hidden_size;
  const int64_t nq = int64_t(c.num_qo_heads) * c.head_dim, nkv = int64_t(c.num_kv_heads) * c.head_dim;
  auto f32 = [&](int i, int64_t n) { f32_buffers_[i].assign(size_t(n), 0.0f); return f32_buffers_[i].data(); };
  auto bf = [&](int i, int64_t n) { bf16_buffers_[i].assign(size_t(n), 0); return bf16_buffers_[i].data(); };
  B_.x = f32(0, T * hidden);
  B_.logits = f32(1, R * c.vocab_size);
  B_.h = bf(0, T * hidden), B_.q = bf(1, T * nq), B_.k = bf(2, T * nkv), B_.v = bf(3, T * nkv);
  B_.proj = f32(2, T * hidden);
  B_.attn = bf(4, T * nq), B_.act = bf(5, T * c.ffn_size), B_.gh = bf(6, R * hidden);
  B_.attn_ws_bytes = attention_workspace_bytes(int32_t(R), c.num_qo_heads, c.head_dim, table_width_ * block_size_);
  attn_ws_.resize(B_.attn_ws_bytes);
  B_.attn_ws = attn_ws_.data();
  staging_.resize(size_t(cuda_step_layout(int32_t(T), int32_t(R), table_width_, int32_t(R)).total));
  B_.staging = staging_.data();
  buckets_ = cuda_graph_buckets(int32_t(std::min(R, T)));
  widths_ = cuda_graph_widths(table_width_, block_size_);
}

void TwinBackend::forward(const StepPlan& plan, float* logits) {
  run(plan);
  std::copy_n(B_.logits, plan.logit_rows.size() * size_t(config_.vocab_size), logits);
}

void TwinBackend::forward_sample(const StepPlan& plan, const cpu::SampleBatch& batch, int32_t* token_ids,
                                 float* logprobs) {
  if (!options_.sample_on_device) fail("twin backend: built without device sampling (sample_on_device)");
  if (size_t(batch.num_rows()) != plan.logit_rows.size())
    fail("twin backend: ", batch.num_rows(), " sampling rows for ", plan.logit_rows.size(), " logit rows");
  // Packed into one buffer as CudaBackend uploads it, and sampled by the kernel's twin from there.
  const cpu::PenaltyLists& pl = batch.penalties;
  sample_staging_.resize(cuda_sample_layout(batch.num_rows(), pl.rep_ids.size(), pl.freq_ids.size()).total);
  const CudaSampleLayout layout = cuda_pack_sample_batch(batch, sample_staging_.data(), sample_staging_.size());
  run(plan);
  if (batch.num_rows() == 0) return;
  cpu::sample(cuda_sample_params(layout, batch.num_rows(), sample_staging_.data(), B_.logits, config_.vocab_size,
                                 token_ids, logprobs));
}

void TwinBackend::run(const StepPlan& plan) {
  plan.validate(block_size_, num_blocks_);
  const int32_t n = plan.num_tokens(), rows = int32_t(plan.logit_rows.size());
  if (n == 0) return;
  if (n > options_.max_tokens_per_step || plan.num_seqs() > options_.max_seqs_per_step ||
      rows > options_.max_seqs_per_step)
    fail("twin backend: a step of ", n, " tokens, ", plan.num_seqs(), " sequences, ", rows,
         " logit rows exceeds its buffers");
  const int32_t bucket = options_.pad_decode_to_buckets && !observer_ && is_decode_only(plan)
                             ? cuda_pick_graph_bucket(buckets_, plan.num_seqs())
                             : -1;
  last_bucket_ = bucket >= 0 ? buckets_[size_t(bucket)] : 0;
  const int32_t width = bucket < 0 ? -1 : cuda_pick_graph_bucket(widths_, std::max(plan.max_blocks_per_seq, 1));
  last_width_ = bucket >= 0 ? widths_[size_t(width)] : 0;
  int64_t elems = 0;
  const StepShape shape = cuda_prepare_step(plan, last_bucket_, bucket >= 0 ? last_width_ : table_width_, block_size_,
                                            staging_.data(), &elems);
  plan_ = &plan;
  TwinOps ops{*this};
  run_forward(config_, layers_, B_, shape, ops);
  plan_ = nullptr;
}

}  // namespace flint
