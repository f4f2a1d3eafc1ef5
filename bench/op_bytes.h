// The bytes one decode step's op must move at the least, for engine_bench --profile's GB/s and % of the copy
// bandwidth per op: a layer matrix's bf16 weights read once (every layer's summed), the LM head's, and the KV cache's
// keys and values read once (Σ kv_len over the step's sequences). Ops without such a floor (norms, RoPE, sampling,
// copies of activations) get 0 and no rate. The names are the CUDA forward pass's (model/cuda_forward.h).
#pragma once
#include <string>

#include "model/config.h"

namespace flint::bench {

inline double op_floor_bytes(const std::string& op, const ModelConfig& c, double sum_kv_len) {
  const double layers = c.num_layers, hidden = c.hidden_size, ffn = c.ffn_size;
  const double nq = double(c.num_qo_heads) * c.head_dim, nkv = double(c.num_kv_heads) * c.head_dim;
  if (op == "qkv matmul") return layers * (nq + 2 * nkv) * hidden * 2;
  if (op == "attention output matmul") return layers * hidden * nq * 2;
  if (op == "gate+up matmul") return layers * 2 * ffn * hidden * 2;
  if (op == "down matmul") return layers * hidden * ffn * 2;
  if (op == "lm head") return double(c.vocab_size) * hidden * 2;
  if (op == "paged_attention") return layers * sum_kv_len * nkv * 2 * 2;  // K and V, bf16
  return 0;
}

}  // namespace flint::bench
