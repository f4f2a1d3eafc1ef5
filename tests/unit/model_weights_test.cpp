// bind_weights: every role found by GGUF and HF names with its shape checked;
// missing, misshapen and unusable tensors refused by name; the tiny fixtures bind.
#include "model/model_weights.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "common/error.h"
#include "model/gguf.h"
#include "model/safetensors.h"

namespace flint {
namespace {

// Tensors with names and shapes only: binding never reads data.
class ShapeSource : public WeightSource {
 public:
  void add(const std::string& name, std::vector<int64_t> shape) {
    Tensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.nbytes = uint64_t(t.numel()) * 4;
    tensors_.push_back(std::move(t));
  }
  void remove(const std::string& name) {
    std::erase_if(tensors_, [&](const Tensor& t) { return t.name == name; });
  }
  void reshape(const std::string& name, std::vector<int64_t> shape) {
    for (Tensor& t : tensors_)
      if (t.name == name) t.shape = std::move(shape);
  }
  const Tensor* find(std::string_view name) const override {
    for (const Tensor& t : tensors_)
      if (t.name == name) return &t;
    return nullptr;
  }
  const std::vector<Tensor>& tensors() const override { return tensors_; }

 private:
  std::vector<Tensor> tensors_;
};

ModelConfig small_config(Arch arch) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_qo_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = arch == Arch::Qwen3 ? 16 : 8;
  c.ffn_size = 48;
  c.max_context = 64;
  c.qkv_bias = arch == Arch::Qwen2;
  c.qk_norm = arch == Arch::Qwen3;
  return c;
}

// Every tensor `c` needs, named as `naming` names them.
ShapeSource full_model(const ModelConfig& c, WeightNaming naming) {
  const bool gguf = naming == WeightNaming::Gguf;
  const int64_t h = c.hidden_size, q = int64_t(c.num_qo_heads) * c.head_dim, kv = int64_t(c.num_kv_heads) * c.head_dim;
  ShapeSource s;
  s.add(gguf ? "token_embd.weight" : "model.embed_tokens.weight", {c.vocab_size, h});
  s.add(gguf ? "output_norm.weight" : "model.norm.weight", {h});
  if (!c.tied_embeddings) s.add(gguf ? "output.weight" : "lm_head.weight", {c.vocab_size, h});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string b = gguf ? "blk." + std::to_string(l) + "." : "model.layers." + std::to_string(l) + ".";
    auto add = [&](const char* g, const char* hf, std::vector<int64_t> shape) { s.add(b + (gguf ? g : hf), shape); };
    add("attn_norm.weight", "input_layernorm.weight", {h});
    add("attn_q.weight", "self_attn.q_proj.weight", {q, h});
    add("attn_k.weight", "self_attn.k_proj.weight", {kv, h});
    add("attn_v.weight", "self_attn.v_proj.weight", {kv, h});
    if (c.qkv_bias) {
      add("attn_q.bias", "self_attn.q_proj.bias", {q});
      add("attn_k.bias", "self_attn.k_proj.bias", {kv});
      add("attn_v.bias", "self_attn.v_proj.bias", {kv});
    }
    if (c.qk_norm) {
      add("attn_q_norm.weight", "self_attn.q_norm.weight", {c.head_dim});
      add("attn_k_norm.weight", "self_attn.k_norm.weight", {c.head_dim});
    }
    add("attn_output.weight", "self_attn.o_proj.weight", {h, q});
    add("ffn_norm.weight", "post_attention_layernorm.weight", {h});
    add("ffn_gate.weight", "mlp.gate_proj.weight", {c.ffn_size, h});
    add("ffn_up.weight", "mlp.up_proj.weight", {c.ffn_size, h});
    add("ffn_down.weight", "mlp.down_proj.weight", {h, c.ffn_size});
  }
  return s;
}

using test::expect_error;

TEST(ModelWeightsTest, BindsEveryRoleByGgufNames) {
  const ModelConfig c = small_config(Arch::Llama);
  const ShapeSource s = full_model(c, WeightNaming::Gguf);
  const ModelWeights w = bind_weights(s, c, WeightNaming::Gguf);
  EXPECT_EQ(w.tok_embd, s.find("token_embd.weight"));
  EXPECT_EQ(w.output_norm, s.find("output_norm.weight"));
  EXPECT_EQ(w.output, s.find("output.weight"));
  ASSERT_EQ(w.layers.size(), 2u);
  const LayerWeights& l1 = w.layers[1];
  EXPECT_EQ(l1.attn_norm, s.find("blk.1.attn_norm.weight"));
  EXPECT_EQ(l1.wq, s.find("blk.1.attn_q.weight"));
  EXPECT_EQ(l1.wk, s.find("blk.1.attn_k.weight"));
  EXPECT_EQ(l1.wv, s.find("blk.1.attn_v.weight"));
  EXPECT_EQ(l1.wo, s.find("blk.1.attn_output.weight"));
  EXPECT_EQ(l1.ffn_norm, s.find("blk.1.ffn_norm.weight"));
  EXPECT_EQ(l1.w_gate, s.find("blk.1.ffn_gate.weight"));
  EXPECT_EQ(l1.w_up, s.find("blk.1.ffn_up.weight"));
  EXPECT_EQ(l1.w_down, s.find("blk.1.ffn_down.weight"));
  EXPECT_EQ(l1.maybe_bq, nullptr);
  EXPECT_EQ(l1.maybe_q_norm, nullptr);
}

TEST(ModelWeightsTest, BindsHfNamesWithQkvBias) {
  const ModelConfig c = small_config(Arch::Qwen2);
  const ShapeSource s = full_model(c, WeightNaming::HuggingFace);
  const ModelWeights w = bind_weights(s, c, WeightNaming::HuggingFace);
  EXPECT_EQ(w.tok_embd, s.find("model.embed_tokens.weight"));
  EXPECT_EQ(w.output_norm, s.find("model.norm.weight"));
  EXPECT_EQ(w.output, s.find("lm_head.weight"));
  const LayerWeights& l0 = w.layers[0];
  EXPECT_EQ(l0.attn_norm, s.find("model.layers.0.input_layernorm.weight"));
  EXPECT_EQ(l0.wo, s.find("model.layers.0.self_attn.o_proj.weight"));
  EXPECT_EQ(l0.maybe_bq, s.find("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_EQ(l0.maybe_bk, s.find("model.layers.0.self_attn.k_proj.bias"));
  EXPECT_EQ(l0.maybe_bv, s.find("model.layers.0.self_attn.v_proj.bias"));
  EXPECT_EQ(l0.ffn_norm, s.find("model.layers.0.post_attention_layernorm.weight"));
  EXPECT_EQ(l0.w_down, s.find("model.layers.0.mlp.down_proj.weight"));
}

TEST(ModelWeightsTest, BindsQkNormAndHeadDimOtherThanHiddenOverHeads) {
  const ModelConfig c = small_config(Arch::Qwen3);  // q dim 64 != hidden 32
  for (WeightNaming naming : {WeightNaming::Gguf, WeightNaming::HuggingFace}) {
    const ShapeSource s = full_model(c, naming);
    const ModelWeights w = bind_weights(s, c, naming);
    ASSERT_NE(w.layers[1].maybe_q_norm, nullptr);
    EXPECT_EQ(w.layers[1].maybe_k_norm->shape, (std::vector<int64_t>{16}));
    EXPECT_EQ(w.layers[1].wo->shape, (std::vector<int64_t>{32, 64}));
  }
}

TEST(ModelWeightsTest, TiedOutputIsTheEmbedding) {
  ModelConfig c = small_config(Arch::Llama);
  c.tied_embeddings = true;
  const ShapeSource s = full_model(c, WeightNaming::Gguf);
  const ModelWeights w = bind_weights(s, c, WeightNaming::Gguf);
  EXPECT_EQ(w.output, w.tok_embd);
}

TEST(ModelWeightsTest, MissingTensorIsNamed) {
  const ModelConfig c = small_config(Arch::Llama);
  ShapeSource s = full_model(c, WeightNaming::Gguf);
  s.remove("blk.1.ffn_up.weight");
  expect_error([&] { bind_weights(s, c, WeightNaming::Gguf); }, {"tensor blk.1.ffn_up.weight", "missing"});
  ShapeSource h = full_model(c, WeightNaming::HuggingFace);
  h.remove("lm_head.weight");
  expect_error([&] { bind_weights(h, c, WeightNaming::HuggingFace); }, {"tensor lm_head.weight", "missing"});
  ShapeSource q = full_model(small_config(Arch::Qwen2), WeightNaming::HuggingFace);
  q.remove("model.layers.0.self_attn.v_proj.bias");
  expect_error([&] { bind_weights(q, small_config(Arch::Qwen2), WeightNaming::HuggingFace); },
               {"tensor model.layers.0.self_attn.v_proj.bias"});
}

TEST(ModelWeightsTest, WrongShapeNamesTensorExpectedAndActual) {
  const ModelConfig c = small_config(Arch::Llama);
  ShapeSource s = full_model(c, WeightNaming::HuggingFace);
  s.reshape("model.layers.1.self_attn.k_proj.weight", {32, 32});
  expect_error([&] { bind_weights(s, c, WeightNaming::HuggingFace); },
               {"tensor model.layers.1.self_attn.k_proj.weight", "shape [32, 32]", "expected [16, 32]"});
  ShapeSource t = full_model(c, WeightNaming::Gguf);
  t.reshape("token_embd.weight", {32, 50});  // transposed
  expect_error([&] { bind_weights(t, c, WeightNaming::Gguf); },
               {"tensor token_embd.weight", "shape [32, 50]", "expected [50, 32]"});
  ShapeSource n = full_model(c, WeightNaming::Gguf);
  n.reshape("output_norm.weight", {1, 32});
  expect_error([&] { bind_weights(n, c, WeightNaming::Gguf); }, {"output_norm.weight", "[1, 32]", "expected [32]"});
}

TEST(ModelWeightsTest, RefusesTensorsTheConfigCannotUse) {
  const ModelConfig c = small_config(Arch::Llama);
  ShapeSource bias = full_model(c, WeightNaming::HuggingFace);
  bias.add("model.layers.0.self_attn.q_proj.bias", {32});
  expect_error([&] { bind_weights(bias, c, WeightNaming::HuggingFace); },
               {"tensor model.layers.0.self_attn.q_proj.bias", "no q/k/v bias"});
  ShapeSource o_bias = full_model(small_config(Arch::Qwen2), WeightNaming::HuggingFace);
  o_bias.add("model.layers.1.self_attn.o_proj.bias", {32});
  expect_error([&] { bind_weights(o_bias, small_config(Arch::Qwen2), WeightNaming::HuggingFace); },
               {"tensor model.layers.1.self_attn.o_proj.bias", "output bias"});
  ShapeSource norm = full_model(c, WeightNaming::Gguf);
  norm.add("blk.1.attn_k_norm.weight", {8});
  expect_error([&] { bind_weights(norm, c, WeightNaming::Gguf); }, {"tensor blk.1.attn_k_norm.weight", "q/k norm"});
  ShapeSource mlp = full_model(c, WeightNaming::Gguf);
  mlp.add("blk.0.ffn_down.bias", {32});
  expect_error([&] { bind_weights(mlp, c, WeightNaming::Gguf); }, {"tensor blk.0.ffn_down.bias", "MLP biases"});
  ShapeSource extra = full_model(c, WeightNaming::Gguf);
  extra.add("blk.2.attn_q.weight", {32, 32});
  expect_error([&] { bind_weights(extra, c, WeightNaming::Gguf); }, {"tensor blk.2.attn_q.weight", "fewer layers"});
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ModelWeightsTest, BindsTheTinyFixtures) {
  for (const char* name : {"tiny-llama", "tiny-qwen2", "tiny-qwen3"}) {
    SCOPED_TRACE(name);
    const std::string dir = std::string(FLINT_TEST_DATA_DIR) + "/" + name;
    const ModelConfig c = config_from_hf_json(read_text(dir + "/config.json"));
    SafetensorsSource s(dir);
    const ModelWeights w = bind_weights(s, c, WeightNaming::HuggingFace);
    ASSERT_EQ(w.layers.size(), 2u);
    EXPECT_EQ(w.output == w.tok_embd, c.tied_embeddings);
    EXPECT_EQ(w.layers[0].maybe_bq != nullptr, c.arch == Arch::Qwen2);
    EXPECT_EQ(w.layers[0].maybe_q_norm != nullptr, c.arch == Arch::Qwen3);
    EXPECT_EQ(w.tok_embd->dtype, c.arch == Arch::Qwen2 ? DType::BF16 : DType::F32);
  }
}

TEST(ModelWeightsTest, BindsTheSmolLM2Gguf) {
  const std::string path = FLINT_MODELS_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent (scripts/fetch-model)";
  GgufFile g(path);
  const ModelConfig c = config_from_gguf(g);
  const ModelWeights w = bind_weights(g, c, WeightNaming::Gguf);
  ASSERT_EQ(w.layers.size(), 30u);
  EXPECT_EQ(w.output, w.tok_embd);
  EXPECT_EQ(w.tok_embd->shape, (std::vector<int64_t>{49152, 576}));
  EXPECT_EQ(w.layers[29].wk->shape, (std::vector<int64_t>{192, 576}));
  EXPECT_EQ(w.layers[0].w_down->shape, (std::vector<int64_t>{576, 1536}));
}

}  // namespace
}  // namespace flint
