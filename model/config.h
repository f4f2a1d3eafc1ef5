// ModelConfig: one validated description of a model's shape, whatever file it came from.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "kernels/rope_style.h"

namespace flint {

class GgufFile;

enum class Arch { Llama, Qwen2, Qwen3 };

// How RoPE pairs the dims of a head (kernels/rope_style.h):
//  Interleaved: (0,1), (2,3), ... adjacent pairs (llama in GGUF: llama.cpp's
//               converter permuted the Q/K rows so that this is right).
//  Halves:      (i, i + head_dim/2) (HF llama, every qwen; "NeoX style").

// Llama-3.1/3.2 frequency scaling ("rope_type": "llama3"); factor 0 means none.
struct RopeScaling {
  float factor = 0.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int32_t original_max_position = 8192;
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  int32_t vocab_size = 0;
  int32_t hidden_size = 0;
  int32_t num_layers = 0;
  int32_t num_qo_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;      // explicit for qwen3; hidden / heads otherwise
  int32_t ffn_size = 0;      // intermediate size of the SwiGLU MLP
  float rope_theta = 10000.0f;
  RopeStyle rope_style = RopeStyle::Halves;
  RopeScaling rope_scaling;
  float rms_eps = 1e-5f;
  bool tied_embeddings = false;  // output matrix is the token embedding
  bool qkv_bias = false;         // qwen2
  bool qk_norm = false;          // qwen3: per-head RMSNorm on q and k
  int32_t max_context = 0;

  // Throws flint::Error naming the first inconsistent field.
  void validate() const;
  std::string describe() const;  // one line for logs
};

std::string_view arch_name(Arch a);

// From GGUF metadata ("general.architecture", "<arch>.block_count", ...).
ModelConfig config_from_gguf(const GgufFile& gguf);
// From a HF config.json's text (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM).
ModelConfig config_from_hf_json(std::string_view config_json);

}  // namespace flint
