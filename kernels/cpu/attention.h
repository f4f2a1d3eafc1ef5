// Paged KV cache view and GQA attention over it (CPU reference twins).
#pragma once
#include <cstdint>

#include "common/thread_pool.h"

namespace flint::cpu {

// One layer's paged KV cache in fp32. Layout of k and v alike:
// [num_blocks][block_size][num_kv_heads][head_dim], contiguous.
struct PagedKv {
  float* k = nullptr;
  float* v = nullptr;
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;

  int64_t slot_stride() const { return int64_t(num_kv_heads) * head_dim; }
  int64_t block_stride() const { return slot_stride() * block_size; }
  // Offset of (block, slot, head, 0) in k or v.
  int64_t offset(int32_t block, int32_t slot, int32_t head) const {
    return block * block_stride() + slot * slot_stride() + int64_t(head) * head_dim;
  }
};

// The batch's sequences as the kernels see them (StepPlan's arrays).
struct AttentionBatch {
  const int32_t* cu_seqlens = nullptr;   // (num_seqs + 1) query ranges
  const int32_t* kv_lens = nullptr;      // (num_seqs) KV length after this step
  const int32_t* block_table = nullptr;  // (num_seqs, max_blocks_per_seq)
  int32_t max_blocks_per_seq = 0;
  const int32_t* positions = nullptr;    // (num_tokens)
  int32_t num_seqs = 0;
  int32_t num_tokens = 0;
};

// k, v (num_tokens, num_kv_heads, head_dim) -> their slots in the cache
// (the token at position p of sequence s goes to block_table[s][p / bs], slot p % bs).
void write_kv(const PagedKv& cache, const AttentionBatch& batch, const float* k, const float* v);

// q (num_tokens, num_qo_heads, head_dim) -> out (num_tokens, num_qo_heads, head_dim).
// Token at position p of sequence s attends to that sequence's cached positions
// [0, p] (causal); query head h reads KV head h / (num_qo_heads / num_kv_heads).
// softmax(q·kᵀ · scale) · v, in fp32, one pass over keys per (token, head).
void paged_attention(const PagedKv& cache, const AttentionBatch& batch, const float* q,
                     int32_t num_qo_heads, float scale, float* out, ThreadPool* pool = nullptr);

}  // namespace flint::cpu
