// The paged KV cache and the attention calls as the CUDA kernels (kernels/cuda/attention.h) and their CPU twin
// (kernels/cpu/attention_bf16.h) both read them: one description, so the twin computes from the same layout,
// strides and batch arrays the kernels see. No CUDA types here; pointers are device pointers for the kernels and
// host pointers for the twin.
//
// The batch is StepPlan's: sequences laid end to end in token order. Sequence s owns query tokens
// [cu_seqlens[s], cu_seqlens[s+1]) and has kv_lens[s] tokens in the cache after this step; token t sits at
// position positions[t] and attends to its sequence's keys [0, positions[t]] (causal, the cached prefix
// included). So one call serves decode (one query token on a long cache), prefill, chunked prefill and a cached
// prefix plus a new chunk alike. Positions ascend within a sequence (the prefill kernel loads keys up to its
// tile's last row).
//
// Padding: a sequence with kv_lens[s] = 0 whose one token sits at position -1 is padding. Nothing is read from the
// cache or written to it or to out for it (its q row is still rotated, harmlessly). A CUDA graph captured for a
// batch-size bucket fills its unused sequences this way.
//
// Batch invariance: a sequence's output depends on its own queries and cache only, never on the other sequences
// in the call. Which kernel runs a sequence depends on what its tokens are, not on how the step was cut
// (attention_is_decode): a decode (one query token, the sequence's last sampled one) takes the decode kernel, a
// prefill chunk (prompt tokens, or a preempted sequence's recompute) the prefill kernel whatever its length, one
// token included: a prompt's last token gets the same bits whether the prefix cache or the token budget left it
// alone in its chunk or not (the prefill kernel's key tiles start at key 0, so its rows do not depend on where a
// chunk starts). The decode kernel cuts a sequence's keys into splits whose size is a function of the sequence's
// own kv length (attention_keys_per_split), so the merge order of the splits is too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/matmul_params.h"  // bf16_bits, FLINT_HOST_DEVICE
#include "kernels/rope_style.h"

namespace flint {

// One layer's KV cache in bf16. k and v have the same layout: num_blocks blocks of block_size token slots, each
// slot num_kv_heads heads of head_dim values, at explicit strides (in elements; a value's dim stride is 1).
// make_paged_kv_cache's layout is [block][kv_head][slot][dim]: a head's slots of one block are contiguous
// (block_size · head_dim · 2 bytes, 4 KiB at 16 × 128), so a warp reads whole 16-byte vectors of one head.
struct PagedKvCache {
  bf16_bits* k = nullptr;
  bf16_bits* v = nullptr;
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int64_t block_stride = 0;  // elements between blocks
  int64_t head_stride = 0;   // elements between kv heads of one slot
  int64_t slot_stride = 0;   // elements between slots of one head

  // Offset of (block, slot, head, dim 0) in k or v.
  FLINT_HOST_DEVICE int64_t offset(int32_t block, int32_t slot, int32_t head) const {
    return int64_t(block) * block_stride + int64_t(head) * head_stride + int64_t(slot) * slot_stride;
  }
  // Elements of one of k, v.
  int64_t numel() const { return int64_t(num_blocks) * block_stride; }
};

// The [block][kv_head][slot][dim] layout over k and v of num_blocks blocks each.
inline PagedKvCache make_paged_kv_cache(bf16_bits* k, bf16_bits* v, int32_t num_blocks, int32_t block_size,
                                        int32_t num_kv_heads, int32_t head_dim) {
  PagedKvCache c;
  c.k = k;
  c.v = v;
  c.num_blocks = num_blocks;
  c.block_size = block_size;
  c.num_kv_heads = num_kv_heads;
  c.head_dim = head_dim;
  c.slot_stride = head_dim;
  c.head_stride = int64_t(block_size) * head_dim;
  c.block_stride = int64_t(num_kv_heads) * block_size * head_dim;
  return c;
}

// The batch's arrays (StepPlan's), plus the two maxima the host knows and the launchers size their grids by.
// For a CUDA graph replayed with new inputs, give upper bounds (the bucket's batch size, the model's context):
// blocks past a sequence's work exit at once.
struct AttentionBatch {
  const int32_t* cu_seqlens = nullptr;   // (num_seqs + 1) query ranges, ascending, cu_seqlens[0] = 0
  const int32_t* kv_lens = nullptr;      // (num_seqs) KV length after this step
  const int32_t* block_table = nullptr;  // (num_seqs, max_blocks_per_seq) block ids
  int32_t max_blocks_per_seq = 0;
  const int32_t* positions = nullptr;    // (num_tokens) position of each query token in its sequence
  int32_t num_seqs = 0;
  int32_t num_tokens = 0;
  int32_t max_q_len = 0;   // >= every sequence's query length (1 for a decode-only batch)
  int32_t max_kv_len = 0;  // >= every kv_lens[s]
  // Sequences [0, decode_seqs) are the step's decodes where they have one query token; every sequence from
  // decode_seqs on is a prefill chunk, one query token included (StepPlan::num_decode_seqs). -1: every sequence with
  // one query token is a decode (a batch whose prefill chunks all have two or more).
  int32_t decode_seqs = -1;
};

// Whether sequence s of b, with q_len query tokens, is a decode (the decode kernel's) or a prefill chunk (the
// prefill kernel's). The kernels and the twin all ask this.
FLINT_HOST_DEVICE inline bool attention_is_decode(const AttentionBatch& b, int32_t s, int32_t q_len) {
  return q_len == 1 && (b.decode_seqs < 0 || s < b.decode_seqs);
}
// Whether b has a prefill chunk to run: a sequence longer than one token, or one from decode_seqs on.
FLINT_HOST_DEVICE inline bool attention_has_prefill(const AttentionBatch& b) {
  return b.max_q_len > 1 || (b.decode_seqs >= 0 && b.decode_seqs < b.num_seqs);
}

// Keys per tile of the prefill kernel's online softmax: each tile's probabilities are taken against the running
// maximum and rounded to bf16 for the P·V step (the twin does the same, tile by tile, so the two agree closely).
constexpr int32_t kAttnPrefillKeyTile = 64;

// Keys per split of the decode kernel, for kv lengths up to kAttnKeysPerSplit · kAttnMaxSplits (16384). 128 keys
// cut a 4096-token cache into 32 splits per KV head, enough thread blocks to fill the card at batch 1; the partial
// sums cost (group · (head_dim + 2)) fp32 per split, about 3% of the KV bytes the split reads.
constexpr int32_t kAttnKeysPerSplit = 128;
// The most splits one sequence gets. A longer cache gets longer splits (a multiple of 128 keys), so the
// workspace, sized per sequence for the longest context, stays bounded: 64 sequences of Llama-3.2-1B's 32 heads
// need 69 MB at any context, where 128-key splits over 131072 tokens would need 553 MB. 128 splits still give a
// 32k-token sequence 1024 thread blocks over Llama-3.2-1B's 8 KV heads.
constexpr int32_t kAttnMaxSplits = 128;

// Keys per split of a sequence with kv_len keys: 128, or the smallest multiple of 128 that keeps its splits within
// kAttnMaxSplits. A function of kv_len alone (batch invariance).
FLINT_HOST_DEVICE inline int32_t attention_keys_per_split(int32_t kv_len) {
  const int32_t units = kv_len <= 0 ? 1 : (kv_len - 1) / kAttnKeysPerSplit + 1;  // 128-key units
  return kAttnKeysPerSplit * ((units - 1) / kAttnMaxSplits + 1);
}

// Splits of a sequence with kv_len keys in the decode kernel (1 .. kAttnMaxSplits).
FLINT_HOST_DEVICE inline int32_t attention_num_splits(int32_t kv_len) {
  if (kv_len <= 0) return 1;
  const int32_t per = attention_keys_per_split(kv_len);
  return (kv_len - 1) / per + 1;
}

// An upper bound on attention_num_splits(n) for every n <= max_kv_len (the splits are not monotone in n: 16384 keys
// make 128 splits, 16385 make 65): the decode grid's split dimension and the workspace's splits per sequence.
FLINT_HOST_DEVICE inline int32_t attention_max_splits(int32_t max_kv_len) {
  const int32_t units = max_kv_len <= 0 ? 1 : (max_kv_len - 1) / kAttnKeysPerSplit + 1;
  return units < kAttnMaxSplits ? units : kAttnMaxSplits;
}

// Workspace the decode kernel needs: per (sequence, query head, split) head_dim partial output values plus the
// running max and sum, when a sequence can have more than one split; else none.
inline size_t attention_workspace_bytes(int32_t num_seqs, int32_t num_qo_heads, int32_t head_dim,
                                        int32_t max_kv_len) {
  const int32_t splits = attention_max_splits(max_kv_len);
  if (splits <= 1) return 0;
  return size_t(num_seqs) * size_t(num_qo_heads) * size_t(splits) * (size_t(head_dim) + 2) * sizeof(float);
}

// RoPE fused with the KV write (before attention, after the QKV matmul):
//   q (num_tokens, num_qo_heads · head_dim), rows ld_q apart: rotated in place (after q norm when given);
//   k, v (num_tokens, num_kv_heads · head_dim), rows ld_k / ld_v apart: k normed and rotated, v as is, both
//   stored into the cache slot of their token (block_table[s][p / block_size], slot p % block_size).
// Per head, in fp32: optional RMSNorm over head_dim (qwen3's q_norm / k_norm, weight bf16 (head_dim), eps), then
// the rotation by angle position · inv_freq[i] (inv_freq (head_dim / 2) fp32, Llama-3 scaling already applied),
// rounded to bf16 once at the end.
// With maybe_qkv_partials (the QKV matmul's split-K partial sums, left by MatmulParams::leave_partials), q, k and v
// are not read from q / k / v: each value is first finished as the matmul's Qkv epilogue would finish it,
// bf16(partial 0 + partial 1 + ... in split order + float(bias[col])), and q is written to q (the reduction
// kernel fused in here: one launch fewer, the same bits).
struct RopeKvParams {
  PagedKvCache cache;
  AttentionBatch batch;
  bf16_bits* q = nullptr;
  int64_t ld_q = 0;
  const bf16_bits* k = nullptr;
  int64_t ld_k = 0;
  const bf16_bits* v = nullptr;
  int64_t ld_v = 0;
  int32_t num_qo_heads = 0;
  const float* inv_freq = nullptr;  // (head_dim / 2)
  RopeStyle style = RopeStyle::Halves;
  const bf16_bits* maybe_q_norm = nullptr;  // (head_dim) or null
  const bf16_bits* maybe_k_norm = nullptr;  // (head_dim) or null
  float norm_eps = 1e-6f;
  // qkv_splits slices of (num_tokens, N) fp32, N = (num_qo_heads + 2 · num_kv_heads) · head_dim, rows N apart,
  // slice s at maybe_qkv_partials + s · num_tokens · N: columns q heads, then k heads, then v heads. Or null.
  const float* maybe_qkv_partials = nullptr;
  int32_t qkv_splits = 0;
  const bf16_bits* maybe_qkv_bias = nullptr;  // (N) with the partials, or null
};

// Attention over the paged cache: out[t, h] = softmax(q[t, h] · K[s, kvh]ᵀ · scale over keys [0, positions[t]])
// · V[s, kvh], with kvh = h / (num_qo_heads / num_kv_heads) (GQA), softmax in fp32, out rounded to bf16.
// q (num_tokens, num_qo_heads · head_dim) rows ld_q apart; out likewise with ld_out (out must not alias q).
struct AttentionParams {
  PagedKvCache cache;
  AttentionBatch batch;
  const bf16_bits* q = nullptr;
  int64_t ld_q = 0;
  bf16_bits* out = nullptr;
  int64_t ld_out = 0;
  int32_t num_qo_heads = 0;
  float scale = 0.0f;  // usually 1 / sqrt(head_dim)
  // fp32 partial results of the decode kernel's splits (attention_workspace_bytes); device memory.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // The CUDA decode kernel's arrival counters (attention_split_counters of them; device memory, zero before the
  // first call, and each call leaves them zero): the last block of a sequence's KV head to finish its split merges
  // the splits. Needed where the workspace is; the CPU twin does not use them.
  int32_t* split_counters = nullptr;
  size_t num_split_counters = 0;
  // A hint that changes no result: when num_seqs · max_kv_len keys' K and V fit this many bytes, each CUDA decode
  // block asks L2 for its split's K and V pages (its KV head's part of each) before it waits on the kernel before
  // it (PDL). 0: never. The CUDA launcher sets it from FLINT_ATTN_AHEAD when the caller left it 0.
  int64_t l2_ahead_bytes = 0;
};

// Arrival counters the CUDA decode kernel needs: one per (sequence, query head) bounds its (sequence, KV head, head
// chunk) blocks; none when no sequence can have two splits.
inline size_t attention_split_counters(int32_t num_seqs, int32_t num_qo_heads, int32_t max_kv_len) {
  return attention_max_splits(max_kv_len) > 1 ? size_t(num_seqs) * size_t(num_qo_heads) : 0;
}

// Head dims the kernels are built for.
inline bool attention_head_dim_supported(int32_t head_dim) { return head_dim == 64 || head_dim == 128; }

// Empty when the cache description is valid; else what is wrong, naming the field.
inline std::string paged_kv_cache_error(const PagedKvCache& c) {
  const std::string w = "paged kv cache: ";
  if (!c.k || !c.v) return w + "k and v must not be null";
  if (c.num_blocks < 1 || c.block_size < 1 || c.num_kv_heads < 1)
    return w + "num_blocks, block_size and num_kv_heads must be >= 1 (got " + std::to_string(c.num_blocks) + ", " +
           std::to_string(c.block_size) + ", " + std::to_string(c.num_kv_heads) + ")";
  if (!attention_head_dim_supported(c.head_dim))
    return w + "head_dim " + std::to_string(c.head_dim) + " is not supported (64 or 128)";
  if (c.slot_stride < c.head_dim && c.head_stride < c.head_dim)
    return w + "slot_stride and head_stride overlap a head's values";
  if (c.slot_stride % 8 || c.head_stride % 8 || c.block_stride % 8)
    return w + "strides must be multiples of 8 elements (16-byte loads)";
  const int64_t span = int64_t(c.block_size - 1) * c.slot_stride + int64_t(c.num_kv_heads - 1) * c.head_stride +
                       c.head_dim;
  if (c.block_stride < span)
    return w + "block_stride " + std::to_string(c.block_stride) + " is smaller than one block's span " +
           std::to_string(span);
  return {};
}

// Empty when the batch's host-side fields are consistent (counts, maxima, pointers); the arrays' contents are
// checked by StepPlan::validate on the host (the kernels read them on the device).
inline std::string attention_batch_error(const AttentionBatch& b) {
  const std::string w = "attention batch: ";
  if (b.num_seqs < 1 || b.num_tokens < 1)
    return w + "num_seqs and num_tokens must be >= 1 (got " + std::to_string(b.num_seqs) + ", " +
           std::to_string(b.num_tokens) + ")";
  if (!b.cu_seqlens || !b.kv_lens || !b.block_table || !b.positions)
    return w + "cu_seqlens, kv_lens, block_table and positions must not be null";
  if (b.max_blocks_per_seq < 1) return w + "max_blocks_per_seq must be >= 1";
  if (b.max_q_len < 1 || b.max_q_len > b.num_tokens)
    return w + "max_q_len " + std::to_string(b.max_q_len) + " must be in [1, num_tokens = " +
           std::to_string(b.num_tokens) + "]";
  if (b.max_kv_len < 1) return w + "max_kv_len must be >= 1";
  if (b.decode_seqs < -1 || b.decode_seqs > b.num_seqs)
    return w + "decode_seqs " + std::to_string(b.decode_seqs) + " must be in [-1, num_seqs = " +
           std::to_string(b.num_seqs) + "]";
  return {};
}

// Empty when p describes a valid call (cache, batch, shapes, strides, pointers, workspace); else why.
inline std::string attention_params_error(const AttentionParams& p) {
  if (std::string e = paged_kv_cache_error(p.cache); !e.empty()) return e;
  if (std::string e = attention_batch_error(p.batch); !e.empty()) return e;
  const int64_t width = int64_t(p.num_qo_heads) * p.cache.head_dim;
  if (p.num_qo_heads < 1 || p.num_qo_heads % p.cache.num_kv_heads)
    return "attention: num_qo_heads " + std::to_string(p.num_qo_heads) + " must be a positive multiple of " +
           "num_kv_heads " + std::to_string(p.cache.num_kv_heads);
  if (!p.q || !p.out) return "attention: q and out must not be null";
  if (p.ld_q < width || p.ld_out < width)
    return "attention: ld_q and ld_out must be >= num_qo_heads * head_dim = " + std::to_string(width);
  if (p.ld_q % 8 || p.ld_out % 8) return "attention: ld_q and ld_out must be multiples of 8 (16-byte loads)";
  if (!(p.scale > 0.0f)) return "attention: scale must be > 0";
  const size_t need = attention_workspace_bytes(p.batch.num_seqs, p.num_qo_heads, p.cache.head_dim,
                                                p.batch.max_kv_len);
  if (need && (!p.workspace || p.workspace_bytes < need))
    return "attention: max_kv_len " + std::to_string(p.batch.max_kv_len) + " needs a workspace of " +
           std::to_string(need) + " bytes, got " + std::to_string(p.workspace ? p.workspace_bytes : 0);
  return {};
}

inline std::string rope_kv_params_error(const RopeKvParams& p) {
  if (std::string e = paged_kv_cache_error(p.cache); !e.empty()) return e;
  if (std::string e = attention_batch_error(p.batch); !e.empty()) return e;
  const int32_t hd = p.cache.head_dim, nkv = p.cache.num_kv_heads;
  if (p.num_qo_heads < 1 || p.num_qo_heads % nkv)
    return "rope_kv: num_qo_heads " + std::to_string(p.num_qo_heads) + " must be a positive multiple of " +
           "num_kv_heads " + std::to_string(nkv);
  if (!p.q || !p.inv_freq) return "rope_kv: q and inv_freq must not be null";
  if (p.maybe_qkv_partials && p.qkv_splits < 1)
    return "rope_kv: qkv_splits " + std::to_string(p.qkv_splits) + " must be >= 1 with qkv partials";
  if (!p.maybe_qkv_partials && (!p.k || !p.v)) return "rope_kv: k and v must not be null (no qkv partials given)";
  if (p.ld_q < int64_t(p.num_qo_heads) * hd ||
      (!p.maybe_qkv_partials && (p.ld_k < int64_t(nkv) * hd || p.ld_v < int64_t(nkv) * hd)))
    return "rope_kv: ld_q, ld_k, ld_v must cover their heads (num_heads * head_dim)";
  if (p.style != RopeStyle::Halves && p.style != RopeStyle::Interleaved)
    return "rope_kv: unknown rope style " + std::to_string(int(p.style));
  if ((p.maybe_q_norm || p.maybe_k_norm) && !(p.norm_eps > 0.0f)) return "rope_kv: norm_eps must be > 0";
  return {};
}

}  // namespace flint
