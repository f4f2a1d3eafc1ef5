// Paged attention problems on the host, shared by the CPU twin's unit tests (tests/unit/attention_bf16_test.cpp)
// and the GPU tests (tests/gpu/attention_gpu_test.cu): seeded random bf16 inputs (never zeros) in
// make_paged_kv_cache's layout, a shuffled block table, and the twin run over every sequence in parallel.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "kernels/attention_params.h"
#include "kernels/bf16.h"
#include "kernels/cpu/attention_bf16.h"

namespace flint::attn_test {

constexpr bf16_bits kNanBf16 = 0xFFFF;  // the poison: a NaN, as cudaMemset(0xFF) writes

// Uniform in [lo, hi), rounded to bf16; with lo < 0 < hi a zero has probability ~2^-16 per value.
inline std::vector<bf16_bits> random_bf16(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<bf16_bits> v(n);
  for (auto& b : v) b = f32_to_bf16_bits(dist(rng));
  return v;
}

struct Shape {
  int32_t head_dim, num_qo_heads, num_kv_heads, block_size;
  int32_t group() const { return num_qo_heads / num_kv_heads; }
};

// One sequence of the batch: its last q_len tokens are this step's queries, the kv_len - q_len before them a
// cached prefix (q_len 1: decode; q_len == kv_len: a whole prefill; {1, 0}: padding, one token at position -1).
struct Seq {
  int32_t q_len, kv_len;
};

struct Problem {
  Shape shape{};
  std::vector<Seq> seqs;
  int32_t num_blocks = 0, max_blocks_per_seq = 0, num_tokens = 0, max_q_len = 0, max_kv_len = 0;
  int32_t decode_seqs = -1;  // AttentionBatch::decode_seqs: from it on, one-token sequences are prefill chunks
  int64_t ld_q = 0, ld_out = 0;
  std::vector<bf16_bits> k, v;  // the cache, every block random (unused ones too: reading one shows)
  std::vector<bf16_bits> q;     // (num_tokens, ld_q)
  std::vector<int32_t> cu_seqlens, kv_lens, block_table, positions;

  int64_t width() const { return int64_t(shape.num_qo_heads) * shape.head_dim; }
  PagedKvCache cache() {
    return make_paged_kv_cache(k.data(), v.data(), num_blocks, shape.block_size, shape.num_kv_heads, shape.head_dim);
  }
  AttentionBatch batch() const {
    AttentionBatch b;
    b.cu_seqlens = cu_seqlens.data(), b.kv_lens = kv_lens.data(), b.block_table = block_table.data();
    b.max_blocks_per_seq = max_blocks_per_seq, b.positions = positions.data();
    b.num_seqs = int32_t(seqs.size()), b.num_tokens = num_tokens, b.max_q_len = max_q_len, b.max_kv_len = max_kv_len;
    b.decode_seqs = decode_seqs;
    return b;
  }
  // Whether sequence s is a decode (the decode kernel's arithmetic) rather than a prefill chunk.
  bool is_decode(int32_t s) const { return attention_is_decode(batch(), s, seqs[size_t(s)].q_len); }
  // Offset of (sequence s, key j, kv head h, dim 0) in k and v.
  int64_t kv_offset(int32_t s, int32_t j, int32_t h) const {
    const PagedKvCache c = const_cast<Problem*>(this)->cache();
    return c.offset(block_table[size_t(s) * max_blocks_per_seq + j / shape.block_size], j % shape.block_size, h);
  }
  int32_t seq_of_token(int32_t t) const {
    return int32_t(std::upper_bound(cu_seqlens.begin(), cu_seqlens.end(), t) - cu_seqlens.begin()) - 1;
  }
  float max_abs_v() const {
    float m = 0.0f;
    for (bf16_bits b : v) m = std::max(m, std::fabs(bf16_bits_to_f32(b)));
    return m;
  }
};

// A problem of `seqs` over a cache of every sequence's blocks plus `spare_blocks`, block ids a random permutation
// (no sequence's blocks are contiguous or ascending); table entries past a sequence's blocks are 0 (as StepPlan
// pads them), a block another sequence owns. q rows and out rows carry q_pad / out_pad extra elements.
inline Problem make_problem(const Shape& shape, std::vector<Seq> seqs, uint32_t seed, int64_t q_pad = 0,
                            int64_t out_pad = 0, int32_t spare_blocks = 5) {
  Problem p;
  p.shape = shape;
  p.seqs = std::move(seqs);
  const int32_t bs = shape.block_size;
  int32_t needed = 0;
  p.cu_seqlens.push_back(0);
  for (const Seq& s : p.seqs) {
    const int32_t blocks = (s.kv_len + bs - 1) / bs;
    needed += blocks;
    p.max_blocks_per_seq = std::max(p.max_blocks_per_seq, blocks);
    p.max_q_len = std::max(p.max_q_len, s.q_len);
    p.max_kv_len = std::max(p.max_kv_len, s.kv_len);
    p.cu_seqlens.push_back(p.cu_seqlens.back() + s.q_len);
    p.kv_lens.push_back(s.kv_len);
    for (int32_t j = s.kv_len - s.q_len; j < s.kv_len; ++j) p.positions.push_back(j);
  }
  p.num_tokens = p.cu_seqlens.back();
  p.num_blocks = needed + spare_blocks;
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(size_t(p.num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  p.block_table.assign(p.seqs.size() * size_t(p.max_blocks_per_seq), 0);
  size_t next = 0;
  for (size_t s = 0; s < p.seqs.size(); ++s)
    for (int32_t b = 0; b < (p.seqs[s].kv_len + bs - 1) / bs; ++b)
      p.block_table[s * size_t(p.max_blocks_per_seq) + size_t(b)] = ids[next++];
  const size_t cache_elems = size_t(p.num_blocks) * bs * shape.num_kv_heads * shape.head_dim;
  p.k = random_bf16(cache_elems, seed + 1);
  p.v = random_bf16(cache_elems, seed + 2);
  p.ld_q = p.width() + q_pad;
  p.ld_out = p.width() + out_pad;
  p.q = random_bf16(size_t(p.num_tokens) * p.ld_q, seed + 3);
  return p;
}

inline AttentionParams attention_params(Problem& p, bf16_bits* out, void* workspace, size_t workspace_bytes) {
  AttentionParams a;
  a.cache = p.cache();
  a.batch = p.batch();
  a.q = p.q.data(), a.ld_q = p.ld_q, a.out = out, a.ld_out = p.ld_out;
  a.num_qo_heads = p.shape.num_qo_heads;
  a.scale = 1.0f / std::sqrt(float(p.shape.head_dim));
  a.workspace = workspace, a.workspace_bytes = workspace_bytes;
  return a;
}

// The twin's output (num_tokens, ld_out), padding left as NaN: work items of at most 64 tokens of one sequence, each
// its own call (a token's result depends only on its own sequence's cache and its position), over `threads` threads.
inline std::vector<bf16_bits> run_twin(Problem& p, int threads = 0) {
  if (threads <= 0) threads = int(std::clamp(std::thread::hardware_concurrency(), 1u, 32u));
  std::vector<bf16_bits> out(size_t(p.num_tokens) * p.ld_out, kNanBf16);
  struct Item {
    int32_t s, t0, n;
  };
  std::vector<Item> items;
  for (int32_t s = 0; s < int32_t(p.seqs.size()); ++s)
    for (int32_t t = p.cu_seqlens[size_t(s)]; t < p.cu_seqlens[size_t(s) + 1]; t += 64)
      items.push_back({s, t, std::min(64, p.cu_seqlens[size_t(s) + 1] - t)});
  auto work = [&](size_t first, size_t step) {
    for (size_t i = first; i < items.size(); i += step) {
      const Item& it = items[i];
      const int32_t cu[2] = {0, it.n};
      AttentionParams a = attention_params(p, out.data() + int64_t(it.t0) * p.ld_out, nullptr, 0);
      a.q = p.q.data() + int64_t(it.t0) * p.ld_q;
      a.batch.cu_seqlens = cu, a.batch.kv_lens = &p.kv_lens[size_t(it.s)];
      a.batch.block_table = &p.block_table[size_t(it.s) * p.max_blocks_per_seq];
      a.batch.positions = &p.positions[size_t(it.t0)];
      a.batch.num_seqs = 1, a.batch.num_tokens = it.n, a.batch.max_q_len = it.n;
      a.batch.decode_seqs = p.is_decode(it.s) ? -1 : 0;  // a prefill chunk's one-token item keeps prefill arithmetic
      a.batch.max_kv_len = std::max(1, p.kv_lens[size_t(it.s)]);  // a padding sequence has kv_len 0
      std::vector<char> ws(attention_workspace_bytes(1, p.shape.num_qo_heads, p.shape.head_dim, a.batch.max_kv_len));
      a.workspace = ws.data(), a.workspace_bytes = ws.size();
      cpu::paged_attention_bf16(a);
    }
  };
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));  // a twin's flint::Error, rethrown on this thread
  for (int w = 0; w < threads; ++w)
    pool.emplace_back([&, w] {
      try {
        work(size_t(w), size_t(threads));
      } catch (...) {
        errors[size_t(w)] = std::current_exception();
      }
    });
  for (auto& t : pool) t.join();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

// The analytic case: every query token of sequence s attends, by construction, to one key only, key_of(s, t). The
// query head's values get magnitudes in [0.5, 1) and the signs of a pattern; the chosen key is 32 × that pattern,
// so its score is scale · 32 · Σ|q_i| >= 16·sqrt(head_dim) (128 at head_dim 64), every other key's at most
// scale · Σ|q_i·k_i| <= sqrt(head_dim) (8) unless it is a chosen key of another pattern. The softmax is then
// one-hot to far below a bf16 ulp, and the output row is the chosen key's V row, bit for bit. Returns the smallest
// gap between the chosen key's score and any other visible key's (computed in double); the caller checks it.
template <class KeyOf>
double make_one_hot(Problem& p, uint32_t seed, KeyOf&& key_of) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mag(0.5f, 1.0f);
  const Shape& sh = p.shape;
  const int32_t hd = sh.head_dim;
  // Sign patterns per (token, kv head); each query head of the group shares its kv head's pattern.
  std::vector<int8_t> sign(size_t(p.num_tokens) * sh.num_kv_heads * hd);
  for (auto& x : sign) x = (rng() & 1) ? 1 : -1;
  for (int32_t t = 0; t < p.num_tokens; ++t) {
    const int32_t s = p.seq_of_token(t);
    for (int32_t h = 0; h < sh.num_qo_heads; ++h)
      for (int32_t i = 0; i < hd; ++i) {
        const int8_t sg = sign[(size_t(t) * sh.num_kv_heads + h / sh.group()) * hd + i];
        p.q[size_t(t) * p.ld_q + size_t(h) * hd + i] = f32_to_bf16_bits(sg * mag(rng));
      }
    for (int32_t kvh = 0; kvh < sh.num_kv_heads; ++kvh) {
      const int64_t off = p.kv_offset(s, key_of(s, t), kvh);
      for (int32_t i = 0; i < hd; ++i)
        p.k[size_t(off + i)] = f32_to_bf16_bits(32.0f * sign[(size_t(t) * sh.num_kv_heads + kvh) * hd + i]);
    }
  }
  double min_gap = INFINITY;
  const double scale = 1.0 / std::sqrt(double(hd));
  for (int32_t t = 0; t < p.num_tokens; ++t) {
    const int32_t s = p.seq_of_token(t);
    for (int32_t h = 0; h < sh.num_qo_heads; ++h) {
      const bf16_bits* q = &p.q[size_t(t) * p.ld_q + size_t(h) * hd];
      const int32_t kvh = h / sh.group(), chosen = key_of(s, t);
      auto score = [&](int32_t j) {
        double d = 0;
        const int64_t off = p.kv_offset(s, j, kvh);
        for (int32_t i = 0; i < hd; ++i) d += double(bf16_bits_to_f32(q[i])) * bf16_bits_to_f32(p.k[size_t(off + i)]);
        return d * scale;
      };
      const double top = score(chosen);
      for (int32_t j = 0; j <= p.positions[size_t(t)]; ++j)
        if (j != chosen) min_gap = std::min(min_gap, top - score(j));
    }
  }
  return min_gap;
}

}  // namespace flint::attn_test
