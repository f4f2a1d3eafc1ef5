// Paged GQA attention on the GPU, over the bf16 KV cache kernels/attention_params.h describes (attention.cu: RoPE +
// KV write and the entry points; attention_decode.cu: decode; attention_prefill.cu: prefill). Three kernels:
//   rope_write_kv: after the QKV matmul; per (token, head) one warp: q/k RMSNorm (qwen3) and RoPE in fp32, q
//           rotated in place, k and v stored into their cache slots.
//   Decode  (sequences with one query token): a thread block per (sequence, KV head, split of 128 keys; past
//           16384 keys, of attention_keys_per_split keys, so a sequence has at most 128 splits); all query heads
//           of the GQA group share the block's one pass over its K/V, read with 16-byte loads (a warp covers 2
//           keys of head_dim 128 or 4 of 64 per load, 4 such loads of K and 4 of V in flight per lane); online
//           softmax in fp32 (exp2, scale folded into log2 e), the warps merged through shared memory. A
//           sequence with more than one split writes (sum, max, partial output) per split to the workspace, and
//           the last of its blocks to finish (an arrival counter per sequence and KV head) adds the splits in
//           split order. FLINT_ATTN_DECODE=mma runs the tensor-core decode kernel
//           instead (attention_decode.cu): the same splits and partials, the group's query heads as the 16 rows of
//           an mma.sync tile, each warp streaming 16-key tiles through shared memory with cp.async.
//   Prefill (sequences with more than one query token): flash-attention-2 tiles on the tensor cores (mma.sync
//           m16n8k16 bf16, fp32 accumulate): 64 query rows per block, where a row is a (token, query head) pair of
//           one KV head's group, so a GQA group shares each K/V tile; K/V tiles of 64 keys gathered through the
//           block table with cp.async into shared memory, two stages; causal mask per row by its position, so a
//           cached prefix plus a new chunk (prefix caching, chunked prefill) is one case.
//           FLINT_ATTN_PREFILL=wgmma runs its sm_90a variant: the same tiles and softmax with both products as
//           wgmma (K from shared memory in the 128-byte swizzle, Vᵀ transposed into it each tile); the same bits.
// Which kernel runs a sequence depends only on its query length, and the decode splits only on its kv length, so
// a sequence's output does not depend on the other sequences in the call (batch invariance; the GPU tests check
// it bit for bit).
#pragma once
#include <cuda_runtime_api.h>

#include <string>

#include "kernels/attention_params.h"

namespace flint::cuda {

// Queues RoPE + KV write on `stream`. p's pointers are device pointers; p.batch's arrays too. An invalid p returns
// cudaErrorInvalidValue and, when `error` is given, says why; otherwise the launch's error.
cudaError_t rope_write_kv(const RopeKvParams& p, cudaStream_t stream, std::string* error = nullptr);

// Queues attention on `stream`: the decode kernel (which merges its splits) for the decodes, the prefill kernel for
// the prefill chunks (attention_is_decode: by p.batch.decode_seqs and query length; the prefill kernel is launched
// when the batch has one, attention_has_prefill; each skips the other's sequences).
// p.workspace must hold attention_workspace_bytes(...) and p.split_counters attention_split_counters(...) zeroed
// counters when max_kv_len > kAttnKeysPerSplit. Errors as rope_write_kv.
cudaError_t paged_attention(const AttentionParams& p, cudaStream_t stream, std::string* error = nullptr);

// Which kernels paged_attention runs. Each process starts from its environment, read at the first call:
// FLINT_ATTN_DECODE=mma the tensor-core decode kernel (else the SIMT one), FLINT_ATTN_PREFILL=wgmma the wgmma
// prefill kernel (else the mma.sync one; on a device without sm_90a code the request is ignored, see
// attention_prefill_wgmma_available). set_attention_kernels overrides it (tests, benchmarks).
struct AttentionKernels {
  bool decode_mma = false;
  bool prefill_wgmma = false;
};
AttentionKernels attention_kernels();
void set_attention_kernels(const AttentionKernels& k);
// Whether the wgmma prefill kernel can run on the current device (compute capability 9.x and a build with sm_90a).
bool attention_prefill_wgmma_available();

}  // namespace flint::cuda
