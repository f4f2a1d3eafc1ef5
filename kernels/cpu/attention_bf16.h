// The CPU twins of the CUDA attention kernels (kernels/cuda/attention.h): the same RopeKvParams and
// AttentionParams (kernels/attention_params.h) over host memory, computed the plain way in fp32 (two passes over
// the keys, exact softmax), each output rounded to bf16 once. Their tests compare them with the fp32 reference
// in kernels/cpu/attention.h; the GPU tests compare the kernels with them.
#pragma once
#include "kernels/attention_params.h"

namespace flint::cpu {

// RoPE (and the optional per-head q/k norm) on q in place, and k, v into the cache. Throws flint::Error naming
// the bad field when p is invalid or a token's block (position / block_size) is outside the cache. A token at a
// negative position (padding) is rotated but not stored.
void rope_write_kv_bf16(const RopeKvParams& p);

// Attention of every query token over its sequence's keys [0, min(position, kv_len - 1)]. p.workspace is not
// used. Throws flint::Error when p is invalid. A token that sees no key (padding) leaves its out row as it is. A sequence's output depends only on its own queries and cache.
void paged_attention_bf16(const AttentionParams& p);

}  // namespace flint::cpu
