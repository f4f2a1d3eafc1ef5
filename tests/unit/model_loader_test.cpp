// load_model: the tiny HF directories (with and without a tokenizer), the real
// SmolLM2 GGUF when present, moves that keep weights valid, and bad paths.
#include "model/model_loader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "test_util.h"
#include "common/error.h"

namespace flint {
namespace {

namespace fs = std::filesystem;

using test::expect_error;

TEST(ModelLoaderTest, LoadsTinyLlamaDirectoryWithTokenizerAndTemplate) {
  LoadedModel m = load_model(FLINT_TEST_DATA_DIR "/tiny-llama");
  EXPECT_EQ(m.config.arch, Arch::Llama);
  EXPECT_EQ(m.config.vocab_size, 512);
  ASSERT_NE(m.source, nullptr);
  EXPECT_EQ(m.weights.layers.size(), 2u);
  ASSERT_TRUE(m.tokenizer.has_value());
  EXPECT_EQ(m.tokenizer->vocab_size(), 512);
  EXPECT_EQ(m.tokenizer->find_token("<|eot_id|>"), std::optional<int32_t>(511));
  EXPECT_NE(m.chat_template_source.find("<|start_header_id|>"), std::string::npos);
}

TEST(ModelLoaderTest, LoadsTinyQwen2DirectoryWithChatMLTemplate) {
  LoadedModel m = load_model(FLINT_TEST_DATA_DIR "/tiny-qwen2");
  EXPECT_EQ(m.config.arch, Arch::Qwen2);
  ASSERT_TRUE(m.tokenizer.has_value());
  EXPECT_EQ(m.tokenizer->vocab_size(), 800);
  EXPECT_NE(m.chat_template_source.find("<|im_start|>"), std::string::npos);
  EXPECT_EQ(m.weights.output, m.weights.tok_embd);
}

TEST(ModelLoaderTest, LoadsShardedTinyQwen3WithoutTokenizer) {
  LoadedModel m = load_model(FLINT_TEST_DATA_DIR "/tiny-qwen3");
  EXPECT_EQ(m.config.arch, Arch::Qwen3);
  EXPECT_EQ(m.config.head_dim, 32);
  EXPECT_FALSE(m.tokenizer.has_value());
  EXPECT_TRUE(m.chat_template_source.empty());
  EXPECT_EQ(m.source->tensors().size(), 25u);
}

TEST(ModelLoaderTest, MovedModelKeepsItsWeightsValid) {
  LoadedModel a = load_model(FLINT_TEST_DATA_DIR "/tiny-qwen3");
  const Tensor* wq = a.weights.layers[1].wq;
  LoadedModel b = std::move(a);
  LoadedModel c(load_model(FLINT_TEST_DATA_DIR "/tiny-llama"));
  c = std::move(b);
  EXPECT_EQ(c.weights.layers[1].wq, wq);
  EXPECT_EQ(c.source->find("model.layers.1.self_attn.q_proj.weight"), wq);
  EXPECT_EQ(wq->shape, (std::vector<int64_t>{128, 64}));
}

TEST(ModelLoaderTest, LoadsTheSmolLM2Gguf) {
  const std::string path = FLINT_MODELS_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(path)) GTEST_SKIP() << path << " is absent (scripts/fetch-model)";
  LoadedModel m = load_model(path);
  EXPECT_EQ(m.config.num_layers, 30);
  EXPECT_EQ(m.weights.output, m.weights.tok_embd);
  ASSERT_TRUE(m.tokenizer.has_value());
  EXPECT_EQ(m.tokenizer->vocab_size(), 49152);
  EXPECT_NE(m.chat_template_source.find("im_start"), std::string::npos);
}

TEST(ModelLoaderTest, RefusesBadPaths) {
  expect_error([] { load_model("/nonexistent/model.gguf"); }, {"/nonexistent/model.gguf", "no such file"});
  expect_error([] { load_model(FLINT_TEST_DATA_DIR "/tiny-llama/golden.json"); }, {"expected a .gguf file"});
  const fs::path dir = fs::temp_directory_path() / ("flint_loader_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  expect_error([&] { load_model(dir.string()); }, {"no config.json"});
  std::ofstream(dir / "config.json") << R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64})";
  expect_error([&] { load_model(dir.string()); }, {dir.string(), "missing \"num_hidden_layers\""});
  fs::remove_all(dir);
}

}  // namespace
}  // namespace flint
