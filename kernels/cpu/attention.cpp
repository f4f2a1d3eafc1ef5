// Paged GQA attention on the CPU: the reference twin of the CUDA kernels.
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"

namespace flint::cpu {

namespace {

// The sequence that owns token t (cu_seqlens ascending).
int32_t seq_of_token(const AttentionBatch& b, int32_t t) {
  const int32_t* it = std::upper_bound(b.cu_seqlens, b.cu_seqlens + b.num_seqs + 1, t);
  return int32_t(it - b.cu_seqlens) - 1;
}

}  // namespace

void write_kv(const PagedKv& cache, const AttentionBatch& batch, const float* k, const float* v) {
  const int64_t row = cache.slot_stride();
  for (int32_t s = 0; s < batch.num_seqs; ++s) {
    const int32_t* blocks = batch.block_table + int64_t(s) * batch.max_blocks_per_seq;
    for (int32_t t = batch.cu_seqlens[s]; t < batch.cu_seqlens[s + 1]; ++t) {
      int32_t p = batch.positions[t];
      int64_t off = cache.offset(blocks[p / cache.block_size], p % cache.block_size, 0);
      std::copy(k + t * row, k + (t + 1) * row, cache.k + off);
      std::copy(v + t * row, v + (t + 1) * row, cache.v + off);
    }
  }
}

void paged_attention(const PagedKv& cache, const AttentionBatch& batch, const float* q,
                     int32_t num_qo_heads, float scale, float* out, ThreadPool* pool) {
  const int32_t hd = cache.head_dim, group = num_qo_heads / cache.num_kv_heads;
  const int64_t work = int64_t(batch.num_tokens) * num_qo_heads;
  parallel_for(pool, work, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> acc(static_cast<size_t>(hd), 0.0f);
    for (int64_t w = begin; w < end; ++w) {
      const int32_t t = int32_t(w / num_qo_heads), h = int32_t(w % num_qo_heads);
      const int32_t s = seq_of_token(batch, t), kvh = h / group;
      const int32_t* blocks = batch.block_table + int64_t(s) * batch.max_blocks_per_seq;
      const int32_t n_keys = batch.positions[t] + 1;  // causal: keys [0, p]
      const float* qv = q + w * hd;
      scores.resize(size_t(n_keys));
      float mx = -INFINITY;
      for (int32_t j = 0; j < n_keys; ++j) {
        const float* kv = cache.k + cache.offset(blocks[j / cache.block_size], j % cache.block_size, kvh);
        scores[size_t(j)] = dot_f32(qv, kv, hd) * scale;
        mx = std::max(mx, scores[size_t(j)]);
      }
      float sum = 0.0f;
      for (int32_t j = 0; j < n_keys; ++j) {
        scores[size_t(j)] = std::exp(scores[size_t(j)] - mx);
        sum += scores[size_t(j)];
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int32_t j = 0; j < n_keys; ++j) {
        const float* vv = cache.v + cache.offset(blocks[j / cache.block_size], j % cache.block_size, kvh);
        const float p = scores[size_t(j)];
        for (int32_t i = 0; i < hd; ++i) acc[size_t(i)] += p * vv[i];
      }
      float* o = out + w * hd;
      const float inv = 1.0f / sum;
      for (int32_t i = 0; i < hd; ++i) o[i] = acc[size_t(i)] * inv;
    }
  });
}

}  // namespace flint::cpu
