// ModelConfig from HF config.json (the tiny fixtures and hand-written configs)
// and from GGUF metadata (the real SmolLM2 file and GGUFs written here); validate().
#include "model/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "common/error.h"
#include "gguf_writer.h"
#include "kernels/cpu/ops.h"
#include "model/gguf.h"

namespace flint {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

using test::expect_error;

// A Llama-3.2-1B-like config.json in the older layout (rope_theta and
// rope_scaling at the top level).
const char* kLlama32Json = R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "num_hidden_layers": 16,
  "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "vocab_size": 128256, "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0, "tie_word_embeddings": true, "hidden_act": "silu",
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "torch_dtype": "bfloat16", "attention_bias": false, "mlp_bias": false
})";

TEST(ConfigTest, ReadsTheTinyLlamaWithRopeParametersAndLlama3Scaling) {
  ModelConfig c = config_from_hf_json(read_text(FLINT_TEST_DATA_DIR "/tiny-llama/config.json"));
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_qo_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.ffn_size, 128);
  EXPECT_EQ(c.max_context, 512);
  EXPECT_FLOAT_EQ(c.rope_theta, 50000.0f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_EQ(c.rope_style, RopeStyle::Halves);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope_scaling.original_max_position, 64);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
}

TEST(ConfigTest, ReadsTheTinyQwen2WithBiasAndTiedEmbeddings) {
  ModelConfig c = config_from_hf_json(read_text(FLINT_TEST_DATA_DIR "/tiny-qwen2/config.json"));
  EXPECT_EQ(c.arch, Arch::Qwen2);
  EXPECT_EQ(c.vocab_size, 800);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_FLOAT_EQ(c.rope_theta, 20000.0f);
  EXPECT_EQ(c.rope_scaling.factor, 0.0f);
  EXPECT_EQ(c.rope_style, RopeStyle::Halves);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
}

TEST(ConfigTest, ReadsTheTinyQwen3WithExplicitHeadDimAndQkNorm) {
  ModelConfig c = config_from_hf_json(read_text(FLINT_TEST_DATA_DIR "/tiny-qwen3/config.json"));
  EXPECT_EQ(c.arch, Arch::Qwen3);
  EXPECT_EQ(c.vocab_size, 1000);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.head_dim, 32);  // not hidden / heads = 16
  EXPECT_FLOAT_EQ(c.rope_theta, 30000.0f);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_TRUE(c.qk_norm);
}

TEST(ConfigTest, ReadsTopLevelRopeThetaAndRopeScaling) {
  ModelConfig c = config_from_hf_json(kLlama32Json);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 32.0f);
  EXPECT_EQ(c.rope_scaling.original_max_position, 8192);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.max_context, 131072);
}

TEST(ConfigTest, DefaultsKvHeadsToHeadsAndThetaTo10000) {
  ModelConfig c = config_from_hf_json(R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 128,
      "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 100,
      "max_position_embeddings": 64, "num_key_value_heads": null, "rope_scaling": null})");
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-6f);
  EXPECT_EQ(c.rope_scaling.factor, 0.0f);
}

TEST(ConfigTest, LlamaAttentionBiasMeansQkvBias) {
  std::string json = kLlama32Json;
  json.replace(json.find("\"attention_bias\": false"), 23, "\"attention_bias\": true");
  EXPECT_TRUE(config_from_hf_json(json).qkv_bias);
}

TEST(ConfigTest, FallsBackToModelType) {
  ModelConfig c = config_from_hf_json(R"({"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 1,
      "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 10,
      "max_position_embeddings": 32})");
  EXPECT_EQ(c.arch, Arch::Qwen3);
  EXPECT_EQ(c.head_dim, 128);  // Qwen3Config's default when head_dim is absent
}

TEST(ConfigTest, HfErrorsNameTheKey) {
  std::string missing = kLlama32Json;
  missing.replace(missing.find("\"hidden_size\": 2048,"), 20, "");
  expect_error([&] { config_from_hf_json(missing); }, {"config.json", "missing \"hidden_size\""});
  std::string wrong_type = kLlama32Json;
  wrong_type.replace(wrong_type.find("\"vocab_size\": 128256"), 20, "\"vocab_size\": \"big\"");
  expect_error([&] { config_from_hf_json(wrong_type); }, {"\"vocab_size\" must be an integer"});
  expect_error([&] { config_from_hf_json("{\"hidden_size\": "); }, {"config.json", "not valid JSON"});
  expect_error([&] { config_from_hf_json("[]"); }, {"not a JSON object"});
  expect_error([&] { config_from_hf_json(R"({"architectures": ["GPT2LMHeadModel"]})"); },
               {"GPT2LMHeadModel", "LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"});
  std::string yarn = kLlama32Json;
  yarn.replace(yarn.find("\"llama3\""), 8, "\"yarn\"");
  expect_error([&] { config_from_hf_json(yarn); }, {"rope type \"yarn\" is not supported"});
  std::string no_factor = kLlama32Json;
  no_factor.replace(no_factor.find("\"factor\": 32.0,"), 15, "");
  expect_error([&] { config_from_hf_json(no_factor); }, {"llama3", "\"factor\""});
  std::string gelu = kLlama32Json;
  gelu.replace(gelu.find("\"silu\""), 6, "\"gelu\"");
  expect_error([&] { config_from_hf_json(gelu); }, {"hidden_act \"gelu\""});
  std::string bad_kv = kLlama32Json;
  bad_kv.replace(bad_kv.find("\"num_key_value_heads\": 8"), 24, "\"num_key_value_heads\": 5");
  expect_error([&] { config_from_hf_json(bad_kv); }, {"num_qo_heads 32", "num_kv_heads 5"});
  std::string huge = kLlama32Json;
  huge.replace(huge.find("\"num_hidden_layers\": 16"), 23, "\"num_hidden_layers\": 99999999999");
  expect_error([&] { config_from_hf_json(huge); }, {"num_hidden_layers", "out of range"});
}

ModelConfig valid_config() {
  ModelConfig c;
  c.vocab_size = 100;
  c.hidden_size = 64;
  c.num_layers = 2;
  c.num_qo_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.ffn_size = 128;
  c.max_context = 256;
  return c;
}

TEST(ConfigTest, ValidateNamesTheField) {
  EXPECT_NO_THROW(valid_config().validate());
  auto expect_invalid = [](auto edit, const std::string& field) {
    ModelConfig c = valid_config();
    edit(c);
    expect_error([&] { c.validate(); }, {field});
  };
  expect_invalid([](ModelConfig& c) { c.vocab_size = 0; }, "vocab_size must be positive");
  expect_invalid([](ModelConfig& c) { c.hidden_size = -1; }, "hidden_size");
  expect_invalid([](ModelConfig& c) { c.num_layers = 0; }, "num_layers");
  expect_invalid([](ModelConfig& c) { c.num_kv_heads = 3; }, "num_kv_heads 3");
  expect_invalid([](ModelConfig& c) { c.head_dim = 15; }, "head_dim 15 must be even");
  expect_invalid([](ModelConfig& c) { c.ffn_size = 0; }, "ffn_size");
  expect_invalid([](ModelConfig& c) { c.max_context = 0; }, "max_context");
  expect_invalid([](ModelConfig& c) { c.rope_theta = 0.0f; }, "rope_theta");
  expect_invalid([](ModelConfig& c) { c.rms_eps = -1.0f; }, "rms_eps");
  expect_invalid([](ModelConfig& c) { c.rope_scaling.factor = 0.5f; }, "rope_scaling.factor");
  expect_invalid(
      [](ModelConfig& c) {
        c.rope_scaling.factor = 8.0f;
        c.rope_scaling.high_freq_factor = 1.0f;
      },
      "high_freq_factor");
  expect_invalid([](ModelConfig& c) { c.num_layers = 1 << 20; }, "num_layers 1048576 is over the limit");
}

TEST(ConfigTest, DescribeAndArchName) {
  EXPECT_EQ(arch_name(Arch::Llama), "llama");
  EXPECT_EQ(arch_name(Arch::Qwen2), "qwen2");
  EXPECT_EQ(arch_name(Arch::Qwen3), "qwen3");
  const std::string d = config_from_hf_json(kLlama32Json).describe();
  for (const char* part : {"llama", "16 layers", "hidden 2048", "kv 8", "head_dim 64", "llama3 x32", "tied"})
    EXPECT_NE(d.find(part), std::string::npos) << d;
}

// ---- GGUF

TEST(ConfigTest, ReadsTheSmolLM2Gguf) {
  const std::string path = FLINT_MODELS_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent (scripts/fetch-model)";
  GgufFile g(path);
  ModelConfig c = config_from_gguf(g);
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.num_qo_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.ffn_size, 1536);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_context, 8192);
  EXPECT_FLOAT_EQ(c.rope_theta, 100000.0f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.rope_style, RopeStyle::Interleaved);
  EXPECT_EQ(c.rope_scaling.factor, 0.0f);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
}

// Metadata of a small model of `arch` (2 layers, hidden 128, 2 heads of 64, 1 kv head).
test::GgufWriter small_gguf(const std::string& arch, uint32_t kv_heads = 1) {
  test::GgufWriter w;
  w.add_string("general.architecture", arch)
      .add_u32(arch + ".block_count", 2)
      .add_u32(arch + ".embedding_length", 128)
      .add_u32(arch + ".feed_forward_length", 256)
      .add_u32(arch + ".attention.head_count", 2)
      .add_u32(arch + ".attention.head_count_kv", kv_heads)
      .add_u32(arch + ".context_length", 1024)
      .add_f32(arch + ".rope.freq_base", 500000.0f)
      .add_f32(arch + ".attention.layer_norm_rms_epsilon", 1e-6f)
      .add_string_array("tokenizer.ggml.tokens", {"a", "b", "c", "d", "e"});
  return w;
}

TEST(ConfigTest, GgufQwen2HasHalvesRopeBiasAndTiedEmbeddings) {
  test::TempFile f = small_gguf("qwen2").write_temp();
  ModelConfig c = config_from_gguf(GgufFile(f.path()));
  EXPECT_EQ(c.arch, Arch::Qwen2);
  EXPECT_EQ(c.vocab_size, 5);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.num_kv_heads, 1);
  EXPECT_EQ(c.max_context, 1024);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-6f);
  EXPECT_EQ(c.rope_style, RopeStyle::Halves);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.tied_embeddings);  // no output.weight
}

TEST(ConfigTest, GgufQwen3TakesHeadDimFromKeyLengthAndUntiesWithOutputWeight) {
  test::GgufWriter w = small_gguf("qwen3");
  w.add_u32("qwen3.attention.key_length", 32).add_u32("qwen3.attention.value_length", 32);
  w.add_tensor_f32("output.weight", {5, 128}, std::vector<float>(5 * 128, 0.5f));
  test::TempFile f = w.write_temp();
  ModelConfig c = config_from_gguf(GgufFile(f.path()));
  EXPECT_EQ(c.arch, Arch::Qwen3);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.tied_embeddings);
}

TEST(ConfigTest, GgufVocabFromVocabSizeKeyWithoutTokens) {
  test::GgufWriter w;
  w.add_string("general.architecture", "llama")
      .add_u32("llama.block_count", 1)
      .add_u32("llama.embedding_length", 64)
      .add_u32("llama.feed_forward_length", 128)
      .add_u32("llama.attention.head_count", 4)
      .add_u32("llama.context_length", 128)
      .add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f)
      .add_u32("llama.vocab_size", 77);
  test::TempFile f = w.write_temp();
  ModelConfig c = config_from_gguf(GgufFile(f.path()));
  EXPECT_EQ(c.vocab_size, 77);
  EXPECT_EQ(c.num_kv_heads, 4);  // head_count_kv absent
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
}

// llama.cpp stores Llama-3 scaling as rope_freqs.weight: per-pair divisors of inv_freq.
std::vector<float> llama3_divisors(float factor, float theta, int head_dim) {
  cpu::RopeParams plain{.head_dim = head_dim, .theta = theta};
  cpu::RopeParams scaled = plain;
  scaled.scaling_factor = factor;
  std::vector<float> f0(size_t(head_dim / 2)), f1(f0.size()), div(f0.size());
  cpu::rope_inv_freq(plain, f0.data());
  cpu::rope_inv_freq(scaled, f1.data());
  for (size_t i = 0; i < div.size(); ++i) div[i] = f0[i] / f1[i];
  return div;
}

TEST(ConfigTest, GgufLlama3ScalingFromRopeFreqsTensor) {
  test::GgufWriter w = small_gguf("llama");
  w.add_tensor_f32("rope_freqs.weight", {32}, llama3_divisors(32.0f, 500000.0f, 64));
  test::TempFile f = w.write_temp();
  ModelConfig c = config_from_gguf(GgufFile(f.path()));
  EXPECT_EQ(c.rope_style, RopeStyle::Interleaved);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 32.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope_scaling.original_max_position, 8192);

  std::vector<float> odd(32, 1.0f);
  odd[31] = 3.0f;
  test::GgufWriter bad = small_gguf("llama");
  bad.add_tensor_f32("rope_freqs.weight", {32}, odd);
  test::TempFile fb = bad.write_temp();
  expect_error([&] { config_from_gguf(GgufFile(fb.path())); }, {"rope_freqs.weight", "llama3 scaling"});
}

TEST(ConfigTest, GgufLlama3ScalingFromKeys) {
  test::GgufWriter w = small_gguf("llama");
  w.add_string("llama.rope.scaling.type", "llama3")
      .add_f32("llama.rope.scaling.factor", 8.0f)
      .add_f32("llama.rope.scaling.low_freq_factor", 2.0f)
      .add_f32("llama.rope.scaling.high_freq_factor", 8.0f)
      .add_u32("llama.rope.scaling.original_context_length", 4096);
  test::TempFile f = w.write_temp();
  ModelConfig c = config_from_gguf(GgufFile(f.path()));
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.low_freq_factor, 2.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.high_freq_factor, 8.0f);
  EXPECT_EQ(c.rope_scaling.original_max_position, 4096);

  test::GgufWriter yarn = small_gguf("llama");
  yarn.add_string("llama.rope.scaling.type", "yarn");
  test::TempFile fy = yarn.write_temp();
  expect_error([&] { config_from_gguf(GgufFile(fy.path())); }, {"rope.scaling.type \"yarn\""});
}

TEST(ConfigTest, GgufErrorsNameTheKey) {
  // Every required key, left out in turn.
  for (const std::string key : {"llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                                "llama.attention.head_count", "llama.context_length",
                                "llama.attention.layer_norm_rms_epsilon", "general.architecture"}) {
    test::GgufWriter w;
    const std::vector<std::pair<std::string, uint32_t>> ints = {
        {"llama.block_count", 2}, {"llama.embedding_length", 128}, {"llama.feed_forward_length", 256},
        {"llama.attention.head_count", 2}, {"llama.context_length", 1024}};
    if (key != "general.architecture") w.add_string("general.architecture", "llama");
    for (const auto& [k, v] : ints)
      if (k != key) w.add_u32(k, v);
    if (key != "llama.attention.layer_norm_rms_epsilon") w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    w.add_string_array("tokenizer.ggml.tokens", {"a"});
    test::TempFile f = w.write_temp();
    expect_error([&] { config_from_gguf(GgufFile(f.path())); }, {key});
  }
  test::GgufWriter gpt2;
  gpt2.add_string("general.architecture", "gpt2");
  test::TempFile f = gpt2.write_temp();
  expect_error([&] { config_from_gguf(GgufFile(f.path())); }, {"general.architecture", "gpt2", "llama, qwen2, qwen3"});

  test::GgufWriter no_vocab;
  no_vocab.add_string("general.architecture", "qwen2")
      .add_u32("qwen2.block_count", 1)
      .add_u32("qwen2.embedding_length", 64)
      .add_u32("qwen2.feed_forward_length", 64)
      .add_u32("qwen2.attention.head_count", 4)
      .add_u32("qwen2.context_length", 64)
      .add_f32("qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
  test::TempFile fv = no_vocab.write_temp();
  expect_error([&] { config_from_gguf(GgufFile(fv.path())); }, {"tokenizer.ggml.tokens", "qwen2.vocab_size"});

  test::TempFile fk = small_gguf("llama", 3).write_temp();
  expect_error([&] { config_from_gguf(GgufFile(fk.path())); }, {"num_qo_heads 2", "num_kv_heads 3"});
}

}  // namespace
}  // namespace flint
