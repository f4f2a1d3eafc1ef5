// The attention kernels' CPU twins: plain loops in fp32 over bf16 inputs, no SIMD, no threads, so they build
// alone (-march=x86-64-v2) for the GPU tests on the GPU machine.
#include "kernels/cpu/attention_bf16.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "kernels/bf16.h"

namespace flint::cpu {

namespace {

void check(const std::string& error) {
  if (!error.empty()) fail(error);
}

// The sequence that owns query token t (cu_seqlens ascending).
int32_t seq_of_token(const AttentionBatch& b, int32_t t) {
  const int32_t* it = std::upper_bound(b.cu_seqlens, b.cu_seqlens + b.num_seqs + 1, t);
  return int32_t(it - b.cu_seqlens) - 1;
}

// The cache block that holds key j of sequence s; throws when the block table points outside the cache.
int32_t block_of(const PagedKvCache& c, const AttentionBatch& b, int32_t s, int32_t j) {
  const int32_t idx = j / c.block_size;
  if (idx >= b.max_blocks_per_seq)
    fail("attention: position ", j, " of sequence ", s, " needs block ", idx, " of a table ", b.max_blocks_per_seq,
         " wide");
  const int32_t block = b.block_table[int64_t(s) * b.max_blocks_per_seq + idx];
  if (block < 0 || block >= c.num_blocks)
    fail("attention: block id ", block, " of sequence ", s, " is outside the cache's ", c.num_blocks, " blocks");
  return block;
}

// One head's values in fp32: optional RMSNorm over head_dim, then the rotation.
void norm_and_rotate(float* x, int32_t hd, const bf16_bits* maybe_norm, float eps, int32_t pos,
                     const float* inv_freq, RopeStyle style) {
  if (maybe_norm) {
    float ss = 0.0f;
    for (int32_t i = 0; i < hd; ++i) ss += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(ss / float(hd) + eps);
    for (int32_t i = 0; i < hd; ++i) x[i] = x[i] * inv * bf16_bits_to_f32(maybe_norm[i]);
  }
  const int32_t half = hd / 2;
  for (int32_t i = 0; i < half; ++i) {
    const float angle = float(pos) * inv_freq[i];
    const float c = std::cos(angle), s = std::sin(angle);
    const int32_t a = style == RopeStyle::Halves ? i : 2 * i;
    const int32_t b = style == RopeStyle::Halves ? i + half : 2 * i + 1;
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x1 * c + x0 * s;
  }
}

}  // namespace

void rope_write_kv_bf16(const RopeKvParams& p) {
  check(rope_kv_params_error(p));
  const PagedKvCache& c = p.cache;
  const AttentionBatch& b = p.batch;
  const int32_t hd = c.head_dim;
  const int64_t n_cols = int64_t(p.num_qo_heads + 2 * c.num_kv_heads) * hd;  // of a qkv partials row
  // Head `row` (q heads, then k, then v) of token t, as float: from the partial sums, finished as the matmul's Qkv
  // epilogue does (splits in order, + bias, bf16), or from the bf16 input `src`.
  auto load_head = [&](int32_t t, int32_t row, const bf16_bits* src, float* out) {
    for (int32_t i = 0; i < hd; ++i) {
      if (!p.maybe_qkv_partials) {
        out[i] = bf16_bits_to_f32(src[i]);
        continue;
      }
      const int64_t col = int64_t(row) * hd + i;
      const float* a = p.maybe_qkv_partials + int64_t(t) * n_cols + col;
      float sum = a[0];
      for (int32_t z = 1; z < p.qkv_splits; ++z) sum = sum + a[z * int64_t(b.num_tokens) * n_cols];
      if (p.maybe_qkv_bias) sum = sum + bf16_bits_to_f32(p.maybe_qkv_bias[col]);
      out[i] = bf16_bits_to_f32(f32_to_bf16_bits(sum));
    }
  };
  std::vector<float> x(size_t(hd), 0.0f), vf(size_t(hd), 0.0f);
  for (int32_t t = 0; t < b.num_tokens; ++t) {
    const int32_t s = seq_of_token(b, t), pos = b.positions[t];
    for (int32_t h = 0; h < p.num_qo_heads; ++h) {
      bf16_bits* q = p.q + int64_t(t) * p.ld_q + int64_t(h) * hd;
      load_head(t, h, q, x.data());
      norm_and_rotate(x.data(), hd, p.maybe_q_norm, p.norm_eps, pos, p.inv_freq, p.style);
      for (int32_t i = 0; i < hd; ++i) q[i] = f32_to_bf16_bits(x[size_t(i)]);
    }
    if (pos < 0) continue;  // padding (attention_params.h): q rotated, nothing stored
    const int32_t block = block_of(c, b, s, pos), slot = pos % c.block_size;
    for (int32_t h = 0; h < c.num_kv_heads; ++h) {
      const bool partials = p.maybe_qkv_partials != nullptr;
      const bf16_bits* v = partials ? nullptr : p.v + int64_t(t) * p.ld_v + int64_t(h) * hd;
      load_head(t, p.num_qo_heads + h, partials ? nullptr : p.k + int64_t(t) * p.ld_k + int64_t(h) * hd, x.data());
      if (partials) load_head(t, p.num_qo_heads + c.num_kv_heads + h, nullptr, vf.data());
      norm_and_rotate(x.data(), hd, p.maybe_k_norm, p.norm_eps, pos, p.inv_freq, p.style);
      bf16_bits* kc = c.k + c.offset(block, slot, h);
      bf16_bits* vc = c.v + c.offset(block, slot, h);
      for (int32_t i = 0; i < hd; ++i) {
        kc[i] = f32_to_bf16_bits(x[size_t(i)]);
        vc[i] = partials ? f32_to_bf16_bits(vf[size_t(i)]) : v[i];  // a bf16 value either way: copied exactly
      }
    }
  }
}

void paged_attention_bf16(const AttentionParams& p) {
  check(attention_params_error(p));
  const PagedKvCache& c = p.cache;
  const AttentionBatch& b = p.batch;
  const int32_t hd = c.head_dim, group = p.num_qo_heads / c.num_kv_heads;
  std::vector<float> qf(static_cast<size_t>(hd)), acc(static_cast<size_t>(hd)), scores;
  for (int32_t t = 0; t < b.num_tokens; ++t) {
    const int32_t s = seq_of_token(b, t);
    const int32_t n_keys = std::min(b.positions[t] + 1, b.kv_lens[s]);
    if (n_keys < 1) continue;  // padding (attention_params.h): out left as it is
    scores.resize(size_t(n_keys));
    for (int32_t h = 0; h < p.num_qo_heads; ++h) {
      const int32_t kvh = h / group;
      const bf16_bits* q = p.q + int64_t(t) * p.ld_q + int64_t(h) * hd;
      for (int32_t i = 0; i < hd; ++i) qf[size_t(i)] = bf16_bits_to_f32(q[i]);
      float mx = -INFINITY;
      for (int32_t j = 0; j < n_keys; ++j) {
        const bf16_bits* k = c.k + c.offset(block_of(c, b, s, j), j % c.block_size, kvh);
        float dot = 0.0f;
        for (int32_t i = 0; i < hd; ++i) dot += qf[size_t(i)] * bf16_bits_to_f32(k[i]);
        scores[size_t(j)] = dot * p.scale;
        mx = std::max(mx, scores[size_t(j)]);
      }
      float sum = 0.0f;
      std::fill(acc.begin(), acc.end(), 0.0f);
      auto add_value = [&](int32_t j, float w) {
        const bf16_bits* v = c.v + c.offset(block_of(c, b, s, j), j % c.block_size, kvh);
        for (int32_t i = 0; i < hd; ++i) acc[size_t(i)] += w * bf16_bits_to_f32(v[i]);
      };
      if (!attention_is_decode(b, s, b.cu_seqlens[s + 1] - b.cu_seqlens[s])) {
        // A prefill sequence, as the prefill kernel computes it: base-2 online softmax over tiles of
        // kAttnPrefillKeyTile keys, each tile's weights against the running maximum, rounded to bf16 for P·V (the
        // sum takes them unrounded), earlier tiles rescaled when the maximum grows.
        constexpr float kLog2e = 1.4426950408889634f;
        float m = -INFINITY;
        for (int32_t j0 = 0; j0 < n_keys; j0 += kAttnPrefillKeyTile) {
          const int32_t j1 = std::min(n_keys, j0 + kAttnPrefillKeyTile);
          float tile_max = -INFINITY;
          for (int32_t j = j0; j < j1; ++j) tile_max = std::max(tile_max, scores[size_t(j)] * kLog2e);
          const float new_m = std::max(m, tile_max), alpha = std::exp2(m - new_m);
          sum *= alpha;
          for (float& a : acc) a *= alpha;
          m = new_m;
          for (int32_t j = j0; j < j1; ++j) {
            const float w = std::exp2(scores[size_t(j)] * kLog2e - m);
            sum += w;
            add_value(j, bf16_bits_to_f32(f32_to_bf16_bits(w)));
          }
        }
      } else {
        for (int32_t j = 0; j < n_keys; ++j) {
          const float w = std::exp(scores[size_t(j)] - mx);
          sum += w;
          add_value(j, w);
        }
      }
      bf16_bits* o = p.out + int64_t(t) * p.ld_out + int64_t(h) * hd;
      for (int32_t i = 0; i < hd; ++i) o[i] = f32_to_bf16_bits(acc[size_t(i)] / sum);
    }
  }
}

}  // namespace flint::cpu
