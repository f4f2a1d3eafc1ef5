// Device helpers the attention kernels share (attention.cu: RoPE + KV write; attention_decode.cu: decode and its
// split merge; attention_prefill.cu: prefill), and the launchers attention.cu calls. Included by those files only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/attention_params.h"

namespace flint::cuda::attn {

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float bf16_to_f32(bf16_bits h) { return __uint_as_float(uint32_t(h) << 16); }
__device__ __forceinline__ bf16_bits f32_to_bf16(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

// Two floats as a bf16 pair (the first in the low half), as an mma operand register.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The cache block holding key j of a sequence whose block-table row is `table`.
__device__ __forceinline__ int64_t key_offset(const PagedKvCache& c, const int32_t* table, int j, int kv_head) {
  return c.offset(table[j / c.block_size], j % c.block_size, kv_head);
}

// Queues the decode kernel (which merges a sequence's splits in its last block) for the sequences of p with one
// query token; the others are skipped. group = query heads per KV head; max_splits =
// attention_max_splits(p.batch.max_kv_len); scores are q·k · scale_log2 in log2 units; mma picks the tensor-core
// kernel. attention_decode.cu.
cudaError_t launch_decode_attention(const AttentionParams& p, int group, int max_splits, float scale_log2, bool mma,
                                    cudaStream_t stream);

// Queues the prefill kernel for the sequences of p with more than one query token (the others are skipped); wgmma
// picks its sm_90a variant. attention_prefill.cu.
cudaError_t launch_prefill_attention(const AttentionParams& p, int group, float scale_log2, bool wgmma,
                                     cudaStream_t stream);

}  // namespace flint::cuda::attn
