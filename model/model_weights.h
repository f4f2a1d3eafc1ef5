// ModelWeights: the tensors of a decoder-only transformer by role, found by
// their GGUF names (blk.N.attn_q.weight) or HF names (model.layers.N.self_attn.q_proj.weight).
#pragma once
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace flint {

enum class WeightNaming { Gguf, HuggingFace };

struct LayerWeights {
  const Tensor* attn_norm = nullptr;  // (hidden)
  const Tensor* wq = nullptr;         // (heads*head_dim, hidden)
  const Tensor* wk = nullptr;         // (kv_heads*head_dim, hidden)
  const Tensor* wv = nullptr;         // (kv_heads*head_dim, hidden)
  const Tensor* maybe_bq = nullptr;   // qwen2 biases
  const Tensor* maybe_bk = nullptr;
  const Tensor* maybe_bv = nullptr;
  const Tensor* maybe_q_norm = nullptr;  // qwen3: (head_dim)
  const Tensor* maybe_k_norm = nullptr;
  const Tensor* wo = nullptr;         // (hidden, heads*head_dim)
  const Tensor* ffn_norm = nullptr;   // (hidden)
  const Tensor* w_gate = nullptr;     // (ffn, hidden)
  const Tensor* w_up = nullptr;       // (ffn, hidden)
  const Tensor* w_down = nullptr;     // (hidden, ffn)
};

struct ModelWeights {
  const Tensor* tok_embd = nullptr;     // (vocab, hidden)
  const Tensor* output_norm = nullptr;  // (hidden)
  const Tensor* output = nullptr;       // (vocab, hidden); tok_embd when tied
  std::vector<LayerWeights> layers;
};

// Finds every tensor the config needs and checks its shape; throws flint::Error
// naming the tensor that is missing or misshapen.
ModelWeights bind_weights(const WeightSource& source, const ModelConfig& config, WeightNaming naming);

}  // namespace flint
