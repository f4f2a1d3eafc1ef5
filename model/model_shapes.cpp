// The shape table. Each row is the model's config.json on the Hugging Face Hub (the repo is named),
// read field by field: num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads,
// head_dim (hidden / heads where absent), intermediate_size, vocab_size, max_position_embeddings,
// rope_theta, rope_scaling, rms_norm_eps, tie_word_embeddings; qwen2 always has q/k/v biases and
// qwen3 always has q/k norms. scripts/hf-random-model.py holds the same table as HF configs and
// scripts/compare-hf-logits.py checks that the two agree (ModelConfig::describe of both).
#include "model/model_shapes.h"

#include "common/error.h"

namespace flint {

namespace {

ModelConfig make(Arch arch, int32_t layers, int32_t hidden, int32_t heads, int32_t kv_heads, int32_t head_dim,
                 int32_t ffn, int32_t vocab, int32_t context, float theta, float rms_eps, bool tied) {
  ModelConfig c;
  c.arch = arch;
  c.num_layers = layers;
  c.hidden_size = hidden;
  c.num_qo_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.ffn_size = ffn;
  c.vocab_size = vocab;
  c.max_context = context;
  c.rope_theta = theta;
  c.rope_style = RopeStyle::Halves;
  c.rms_eps = rms_eps;
  c.tied_embeddings = tied;
  c.qkv_bias = arch == Arch::Qwen2;
  c.qk_norm = arch == Arch::Qwen3;
  return c;
}

// Llama 3.1/3.2's "rope_type": "llama3" frequency scaling.
ModelConfig with_llama3_scaling(ModelConfig c, float factor) {
  c.rope_scaling.factor = factor;
  c.rope_scaling.low_freq_factor = 1.0f;
  c.rope_scaling.high_freq_factor = 4.0f;
  c.rope_scaling.original_max_position = 8192;
  return c;
}

const ModelShape kShapes[] = {
    //                                              layers hidden heads kv  hd   ffn    vocab   context theta  eps  tied
    {"smollm2-135m", "HuggingFaceTB/SmolLM2-135M",
     make(Arch::Llama, 30, 576, 9, 3, 64, 1536, 49152, 8192, 100000.0f, 1e-5f, true)},
    {"llama-3.2-1b", "meta-llama/Llama-3.2-1B",
     with_llama3_scaling(make(Arch::Llama, 16, 2048, 32, 8, 64, 8192, 128256, 131072, 500000.0f, 1e-5f, true), 32.0f)},
    {"llama-3.1-8b", "meta-llama/Llama-3.1-8B",
     with_llama3_scaling(make(Arch::Llama, 32, 4096, 32, 8, 128, 14336, 128256, 131072, 500000.0f, 1e-5f, false), 8.0f)},
    {"qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct",
     make(Arch::Qwen2, 28, 1536, 12, 2, 128, 8960, 151936, 32768, 1000000.0f, 1e-6f, true)},
    {"qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct",
     make(Arch::Qwen2, 28, 3584, 28, 4, 128, 18944, 152064, 32768, 1000000.0f, 1e-6f, false)},
    {"qwen3-0.6b", "Qwen/Qwen3-0.6B",
     make(Arch::Qwen3, 28, 1024, 16, 8, 128, 3072, 151936, 40960, 1000000.0f, 1e-6f, true)},
};

}  // namespace

std::span<const ModelShape> model_shapes() { return kShapes; }

std::string model_shape_names() {
  std::string names;
  for (const ModelShape& s : kShapes) names += (names.empty() ? "" : ", ") + std::string(s.name);
  return names;
}

const ModelShape& find_model_shape(std::string_view name) {
  for (const ModelShape& s : kShapes)
    if (s.name == name) return s;
  fail("unknown model shape \"", name, "\"; known: ", model_shape_names());
}

}  // namespace flint
