// The decoder-only transformer forward pass on the CPU, composed from kernels/cpu.
#include "model/cpu_backend.h"

#include <cmath>

#include "common/error.h"
#include "kernels/cpu/quant.h"

namespace flint {

std::vector<float> tensor_to_f32(const Tensor& t, int64_t expected_numel) {
  if (t.numel() != expected_numel) fail("tensor ", t.name, ": ", t.numel(), " values, expected ", expected_numel);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const int64_t cols = t.cols();
  for (int64_t r = 0; r < t.rows(); ++r)
    cpu::dequantize_row(t.dtype, t.data + uint64_t(r) * t.row_bytes(), out.data() + r * cols, cols);
  return out;
}

namespace {

std::vector<float> maybe_f32(const Tensor* t, int64_t n) {
  return t == nullptr ? std::vector<float>{} : tensor_to_f32(*t, n);
}

void grow(std::vector<float>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(size_t(n));
}

}  // namespace

CpuBackend::CpuBackend(const ModelConfig& config, const ModelWeights& weights, const CpuBackendOptions& options)
    : config_(config), weights_(weights), block_size_(options.block_size), pool_(options.num_threads) {
  config_.validate();
  if (block_size_ <= 0) fail("cpu backend: block size ", block_size_, " must be positive");
  num_blocks_ = options.num_kv_blocks > 0 ? options.num_kv_blocks
                                          : (config_.max_context + block_size_ - 1) / block_size_;
  if (num_blocks_ <= 0) fail("cpu backend: no KV blocks (max_context ", config_.max_context, ")");
  const int64_t hidden = config_.hidden_size, hd = config_.head_dim;
  for (const LayerWeights& lw : weights_.layers) {
    LayerVectors v;
    v.attn_norm = tensor_to_f32(*lw.attn_norm, hidden);
    v.ffn_norm = tensor_to_f32(*lw.ffn_norm, hidden);
    v.bq = maybe_f32(lw.maybe_bq, config_.num_qo_heads * hd);
    v.bk = maybe_f32(lw.maybe_bk, config_.num_kv_heads * hd);
    v.bv = maybe_f32(lw.maybe_bv, config_.num_kv_heads * hd);
    v.q_norm = maybe_f32(lw.maybe_q_norm, hd);
    v.k_norm = maybe_f32(lw.maybe_k_norm, hd);
    layer_vectors_.push_back(std::move(v));
  }
  output_norm_ = tensor_to_f32(*weights_.output_norm, hidden);
  rope_.head_dim = config_.head_dim;
  rope_.theta = config_.rope_theta;
  rope_.style = config_.rope_style;
  rope_.scaling_factor = config_.rope_scaling.factor;
  rope_.low_freq_factor = config_.rope_scaling.low_freq_factor;
  rope_.high_freq_factor = config_.rope_scaling.high_freq_factor;
  rope_.original_max_position = config_.rope_scaling.original_max_position;
  inv_freq_.resize(size_t(hd / 2));
  cpu::rope_inv_freq(rope_, inv_freq_.data());
  const size_t cache_floats = size_t(num_blocks_) * size_t(block_size_) * size_t(config_.num_kv_heads) * size_t(hd);
  k_cache_.assign(size_t(config_.num_layers), std::vector<float>(cache_floats));
  v_cache_.assign(size_t(config_.num_layers), std::vector<float>(cache_floats));
}

void CpuBackend::matmul(const Tensor& w, const float* x, int64_t m, float* y) {
  cpu::matmul(w.dtype, w.data, w.row_bytes(), w.rows(), w.cols(), x, m, y, &pool_);
}

void CpuBackend::matmul3(const Tensor* w0, float* y0, const Tensor* w1, float* y1, const Tensor* w2, float* y2,
                         int64_t m) {
  cpu::MatmulOutput outs[3];
  int count = 0;
  for (auto [w, y] : {std::pair{w0, y0}, std::pair{w1, y1}, std::pair{w2, y2}})
    if (w != nullptr) outs[count++] = {w->dtype, w->data, w->row_bytes(), w->rows(), y};
  cpu::matmul_multi(outs, count, w0->cols(), h_.data(), m, &pool_);
}

void CpuBackend::observe(const char* name, int layer, const float* data, int64_t rows, int64_t cols) {
  if (!observer_) return;
  observer_(layer < 0 ? std::string(name) : "layer." + std::to_string(layer) + "." + name, data, rows, cols);
}

void CpuBackend::forward(const StepPlan& plan, float* logits) {
  plan.validate(block_size_, num_blocks_);
  const int64_t n = plan.num_tokens();
  if (n == 0) return;
  const int64_t hidden = config_.hidden_size, hd = config_.head_dim, ffn = config_.ffn_size;
  const int64_t nq = config_.num_qo_heads, nkv = config_.num_kv_heads;
  for (int32_t id : plan.token_ids)
    if (id < 0 || id >= config_.vocab_size) fail("token id ", id, " outside the vocabulary [0, ", config_.vocab_size, ")");
  grow(x_, n * hidden);
  grow(h_, n * hidden);
  grow(q_, n * nq * hd);
  grow(k_, n * nkv * hd);
  grow(v_, n * nkv * hd);
  grow(attn_, n * nq * hd);
  grow(proj_, n * hidden);
  grow(gate_, n * ffn);
  grow(up_, n * ffn);

  const Tensor& emb = *weights_.tok_embd;
  cpu::embedding(emb.dtype, emb.data, emb.row_bytes(), plan.token_ids.data(), n, hidden, x_.data());
  observe("embedding", -1, x_.data(), n, hidden);

  cpu::AttentionBatch batch;
  batch.cu_seqlens = plan.cu_seqlens.data();
  batch.kv_lens = plan.kv_lens.data();
  batch.block_table = plan.block_table.data();
  batch.max_blocks_per_seq = plan.max_blocks_per_seq;
  batch.positions = plan.positions.data();
  batch.num_seqs = plan.num_seqs();
  batch.num_tokens = plan.num_tokens();
  const float scale = 1.0f / std::sqrt(float(hd));

  for (int l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& lw = weights_.layers[size_t(l)];
    const LayerVectors& lv = layer_vectors_[size_t(l)];
    // Attention block: h = norm(x); x += Wo · attn(rope(Wq h), rope(Wk h), Wv h)
    cpu::rms_norm(x_.data(), lv.attn_norm.data(), h_.data(), n, hidden, config_.rms_eps, &pool_);
    matmul3(lw.wq, q_.data(), lw.wk, k_.data(), lw.wv, v_.data(), n);  // QKV in one pass
    if (!lv.bq.empty()) cpu::add_bias(q_.data(), lv.bq.data(), n, nq * hd);
    if (!lv.bk.empty()) cpu::add_bias(k_.data(), lv.bk.data(), n, nkv * hd);
    if (!lv.bv.empty()) cpu::add_bias(v_.data(), lv.bv.data(), n, nkv * hd);
    if (!lv.q_norm.empty()) cpu::rms_norm(q_.data(), lv.q_norm.data(), q_.data(), n * nq, hd, config_.rms_eps);
    if (!lv.k_norm.empty()) cpu::rms_norm(k_.data(), lv.k_norm.data(), k_.data(), n * nkv, hd, config_.rms_eps);
    cpu::rope(q_.data(), plan.positions.data(), n, nq, rope_, inv_freq_.data());
    cpu::rope(k_.data(), plan.positions.data(), n, nkv, rope_, inv_freq_.data());
    observe("q", l, q_.data(), n, nq * hd);
    observe("k", l, k_.data(), n, nkv * hd);
    observe("v", l, v_.data(), n, nkv * hd);

    cpu::PagedKv cache{k_cache_[size_t(l)].data(), v_cache_[size_t(l)].data(), num_blocks_, block_size_,
                       int32_t(nkv), int32_t(hd)};
    cpu::write_kv(cache, batch, k_.data(), v_.data());
    cpu::paged_attention(cache, batch, q_.data(), int32_t(nq), scale, attn_.data(), &pool_);
    observe("attn", l, attn_.data(), n, nq * hd);
    matmul(*lw.wo, attn_.data(), n, proj_.data());
    cpu::add_inplace(x_.data(), proj_.data(), n, hidden);
    observe("attn_residual", l, x_.data(), n, hidden);

    // MLP block: x += W_down · (silu(W_gate h) * W_up h), h = norm(x)
    cpu::rms_norm(x_.data(), lv.ffn_norm.data(), h_.data(), n, hidden, config_.rms_eps, &pool_);
    matmul3(lw.w_gate, gate_.data(), lw.w_up, up_.data(), nullptr, nullptr, n);  // gate and up in one pass
    cpu::silu_mul(gate_.data(), up_.data(), gate_.data(), n, ffn);
    matmul(*lw.w_down, gate_.data(), n, proj_.data());
    cpu::add_inplace(x_.data(), proj_.data(), n, hidden);
    observe("out", l, x_.data(), n, hidden);
  }

  // Logits only for the rows that sample: gather, norm, LM head.
  const int64_t rows = int64_t(plan.logit_rows.size());
  if (rows == 0) return;
  for (int64_t i = 0; i < rows; ++i)
    std::copy_n(x_.data() + plan.logit_rows[size_t(i)] * hidden, hidden, h_.data() + i * hidden);
  cpu::rms_norm(h_.data(), output_norm_.data(), h_.data(), rows, hidden, config_.rms_eps);
  observe("final_norm", -1, h_.data(), rows, hidden);
  matmul(*weights_.output, h_.data(), rows, logits);
}

}  // namespace flint
