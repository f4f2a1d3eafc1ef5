// Random-weight models (model/random_weights.h) and the shape table (model/model_shapes.h): every shape
// builds and binds, the same spec gives the same bits, another seed other bits, a shorter model is the
// longer one's prefix, the values have the stated distribution and the logits are not flat.
#include "model/random_weights.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include <unistd.h>

#include "common/thread_pool.h"
#include "engine/offline_runner.h"
#include "kernels/cpu/quant.h"
#include "model/cpu_backend.h"
#include "model/model_shapes.h"
#include "model/model_weights.h"
#include "test_util.h"

namespace flint {
namespace {

namespace fs = std::filesystem;
using test::expect_error;

// A shape's config cut down to unit-test size: one layer and a small vocabulary; heads, head_dim, ffn and
// the arch's flags (bias, q/k norm, tied embeddings) as they are.
ModelConfig small(const ModelShape& s) {
  ModelConfig c = s.config;
  c.num_layers = 1;
  c.vocab_size = 300;
  return c;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes == b.nbytes && std::memcmp(a.data, b.data, a.nbytes) == 0;
}

TEST(ModelShapesTest, TableIsValidAndNamesAreUnique) {
  std::set<std::string_view> names;
  for (const ModelShape& s : model_shapes()) {
    SCOPED_TRACE(s.name);
    EXPECT_TRUE(names.insert(s.name).second);
    EXPECT_NO_THROW(s.config.validate());
    EXPECT_EQ(s.config.rope_style, RopeStyle::Halves);
    EXPECT_EQ(s.config.qkv_bias, s.config.arch == Arch::Qwen2);
    EXPECT_EQ(s.config.qk_norm, s.config.arch == Arch::Qwen3);
  }
  for (const char* name : {"smollm2-135m", "llama-3.2-1b", "qwen2.5-1.5b", "qwen2.5-7b", "qwen3-0.6b"})
    EXPECT_TRUE(names.count(name)) << name;
}

TEST(ModelShapesTest, UnknownNameListsTheKnownOnes) {
  expect_error([] { find_model_shape("llama-9b"); }, {"\"llama-9b\"", "smollm2-135m", "qwen3-0.6b", "qwen2.5-7b"});
  expect_error([] { parse_random_model_spec("gpt2:layers=2"); }, {"\"gpt2\"", "llama-3.2-1b"});
}

TEST(RandomModelSpecTest, ParsesLayersAndSeedAndRoundTrips) {
  RandomModelSpec s = parse_random_model_spec("qwen3-0.6b:layers=2,seed=7");
  EXPECT_EQ(s.shape, "qwen3-0.6b");
  EXPECT_EQ(s.num_layers, 2);
  EXPECT_EQ(s.seed, 7u);
  EXPECT_EQ(s.config().num_layers, 2);
  EXPECT_EQ(s.config().hidden_size, find_model_shape("qwen3-0.6b").config.hidden_size);
  RandomModelSpec back = parse_random_model_spec(s.to_string());
  EXPECT_EQ(back.shape, s.shape);
  EXPECT_EQ(back.num_layers, s.num_layers);
  EXPECT_EQ(back.seed, s.seed);

  RandomModelSpec d = parse_random_model_spec("llama-3.2-1b");
  EXPECT_EQ(d.num_layers, 0);
  EXPECT_EQ(d.seed, kDefaultRandomWeightSeed);
  EXPECT_EQ(d.config().num_layers, find_model_shape("llama-3.2-1b").config.num_layers);
}

TEST(RandomModelSpecTest, RejectsBadParts) {
  expect_error([] { parse_random_model_spec("qwen3-0.6b:layers=0"); }, {"layers must be at least 1"});
  expect_error([] { parse_random_model_spec("qwen3-0.6b:layers=29"); }, {"layers=29", "[1, 28]"});
  expect_error([] { parse_random_model_spec("qwen3-0.6b:layers=two"); }, {"\"two\"", "not an integer"});
  expect_error([] { parse_random_model_spec("qwen3-0.6b:depth=2"); }, {"unknown key \"depth\""});
  expect_error([] { parse_random_model_spec("qwen3-0.6b:2"); }, {"\"2\" is not KEY=VALUE"});
  expect_error([] { parse_random_model_spec("qwen3-0.6b:seed=-1"); }, {"seed must not be negative"});
}

TEST(RandomWeightsTest, EveryShapeBindsWithItsTensorShapes) {
  ThreadPool pool(2);
  for (const ModelShape& s : model_shapes()) {
    SCOPED_TRACE(s.name);
    const ModelConfig c = small(s);
    RandomWeightSource src(c, 1, &pool);
    const ModelWeights w = bind_weights(src, c, WeightNaming::HuggingFace);  // checks every shape, refuses extras
    ASSERT_EQ(w.layers.size(), 1u);
    const int64_t hd = c.head_dim;
    EXPECT_EQ(w.layers[0].wq->shape, (std::vector<int64_t>{c.num_qo_heads * hd, c.hidden_size}));
    EXPECT_EQ(w.layers[0].wk->shape, (std::vector<int64_t>{c.num_kv_heads * hd, c.hidden_size}));
    EXPECT_EQ(w.layers[0].w_down->shape, (std::vector<int64_t>{c.hidden_size, c.ffn_size}));
    EXPECT_EQ(w.layers[0].maybe_bq != nullptr, c.qkv_bias);
    EXPECT_EQ(w.layers[0].maybe_q_norm != nullptr, c.qk_norm);
    EXPECT_EQ(w.output == w.tok_embd, c.tied_embeddings);
    for (const Tensor& t : src.tensors()) {
      EXPECT_EQ(t.dtype, DType::BF16) << t.name;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 256, 0u) << t.name;
    }
  }
}

TEST(RandomWeightsTest, SameSeedSameBitsOtherSeedOtherBitsAnyThreadCount) {
  const ModelConfig c = small(find_model_shape("qwen2.5-1.5b"));
  ThreadPool one(1), two(2);
  RandomWeightSource a(c, 42, &one), b(c, 42, &two), other(c, 43, &two);
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const Tensor& ta = a.tensors()[i];
    EXPECT_TRUE(same_bytes(ta, b.tensors()[i])) << ta.name;
    // Another seed: nearly every value differs (a bf16 collision is possible, a run of them is not).
    const auto* x = reinterpret_cast<const uint16_t*>(ta.data);
    const auto* y = reinterpret_cast<const uint16_t*>(other.tensors()[i].data);
    int64_t equal = 0;
    for (int64_t j = 0; j < ta.numel(); ++j) equal += x[j] == y[j];
    EXPECT_LT(equal, ta.numel() / 10 + 1) << ta.name;
  }
}

TEST(RandomWeightsTest, FewerLayersIsThePrefixOfTheFullModel) {
  ModelConfig c = small(find_model_shape("qwen3-0.6b"));
  c.num_layers = 3;
  ModelConfig c1 = c;
  c1.num_layers = 1;
  RandomWeightSource full(c, 5, nullptr), one(c1, 5, nullptr);
  for (const Tensor& t : one.tensors()) {
    const Tensor* f = full.find(t.name);
    ASSERT_NE(f, nullptr) << t.name;
    EXPECT_TRUE(same_bytes(t, *f)) << t.name;
  }
  EXPECT_EQ(one.find("model.layers.1.self_attn.q_proj.weight"), nullptr);
}

// Mean and standard deviation of a bf16 tensor's values.
std::pair<double, double> moments(const Tensor& t) {
  double sum = 0, sq = 0;
  const auto* v = reinterpret_cast<const uint16_t*>(t.data);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double x = cpu::bf16_to_f32(v[i]);
    sum += x;
    sq += x * x;
  }
  const double mean = sum / double(t.numel());
  return {mean, std::sqrt(sq / double(t.numel()) - mean * mean)};
}

TEST(RandomWeightsTest, ValuesHaveTheStatedDistribution) {
  const ModelConfig c = small(find_model_shape("qwen2.5-1.5b"));
  RandomWeightSource src(c, 9, nullptr);
  auto [qm, qs] = moments(src.get("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_NEAR(qm, 0.0, 0.002);
  EXPECT_NEAR(qs, 1.0 / std::sqrt(double(c.hidden_size)), 0.01 / std::sqrt(double(c.hidden_size)) * 5);
  auto [dm, ds] = moments(src.get("model.layers.0.mlp.down_proj.weight"));
  EXPECT_NEAR(ds, 1.0 / std::sqrt(double(c.ffn_size)), 0.05 / std::sqrt(double(c.ffn_size)));
  auto [nm, ns] = moments(src.get("model.layers.0.input_layernorm.weight"));
  EXPECT_NEAR(nm, 1.0, 0.02);
  EXPECT_NEAR(ns, 0.1, 0.01);
  auto [em, es] = moments(src.get("model.embed_tokens.weight"));
  EXPECT_NEAR(es, 2.0 / std::sqrt(double(c.hidden_size)), 0.1 / std::sqrt(double(c.hidden_size)));

  // The unit values: within [-2√3, 2√3], mean 0, std 1, and bell-shaped (more mass near 0 than a uniform).
  double sum = 0, sq = 0, lo = 0, hi = 0;
  int near_zero = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = random_weight_unit(3, "t", uint64_t(i));
    sum += x, sq += x * x, lo = std::min(lo, x), hi = std::max(hi, x);
    near_zero += std::abs(x) < 0.5;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(std::sqrt(sq / n), 1.0, 0.01);
  EXPECT_GE(lo, -2 * std::sqrt(3.0));
  EXPECT_LE(hi, 2 * std::sqrt(3.0));
  // A normal has 38% of its mass within 0.5; a unit-variance uniform 29%; Irwin-Hall(4) about 37%.
  EXPECT_GT(double(near_zero) / n, 0.35);
}

TEST(RandomWeightsTest, LogitsAreSpreadAndFeedAllMatchesFeed) {
  RandomModelSpec spec = parse_random_model_spec("smollm2-135m:layers=2,seed=11");
  LoadedModel m = load_random_model(spec, 2);
  EXPECT_EQ(m.path, "random:smollm2-135m:layers=2,seed=11");
  EXPECT_FALSE(m.tokenizer.has_value());
  CpuBackendOptions opts;
  opts.num_kv_blocks = 4;
  opts.num_threads = 2;
  CpuBackend backend(m.config, m.weights, opts);
  OfflineRunner runner(backend);
  const std::vector<int32_t> ids = {5, 900, 17, 40000, 3};
  const std::vector<float> all = runner.feed_all(ids);
  const size_t vocab = size_t(m.config.vocab_size);
  ASSERT_EQ(all.size(), ids.size() * vocab);
  for (size_t r = 0; r < ids.size(); ++r) {
    // Row r is what feed() returns after the first r + 1 tokens.
    runner.reset();
    const std::vector<float>& last = runner.feed(std::span(ids.data(), r + 1));
    for (size_t v = 0; v < vocab; ++v) ASSERT_EQ(all[r * vocab + v], last[v]) << "row " << r << " token " << v;
    // Not flat: the logits spread with std about 2 (the embedding's scale), and the top one stands out.
    double sum = 0, sq = 0;
    for (float x : last) sum += x, sq += double(x) * x;
    const double mean = sum / double(vocab), sd = std::sqrt(sq / double(vocab) - mean * mean);
    EXPECT_GT(sd, 1.0) << "row " << r;
    EXPECT_LT(sd, 4.0) << "row " << r;
    EXPECT_GT(*std::max_element(last.begin(), last.end()) - mean, 3 * sd) << "row " << r;
  }
}

TEST(RandomWeightsTest, AttachTokenizerFromADirectoryAndRefusesOneTooBig) {
  LoadedModel m = load_random_model(parse_random_model_spec("smollm2-135m:layers=1"), 2);
  attach_tokenizer(m, FLINT_TEST_DATA_DIR "/tiny-llama");
  ASSERT_TRUE(m.tokenizer.has_value());
  EXPECT_EQ(m.tokenizer->vocab_size(), 512);

  // A directory without tokenizer.json: an error, not the tokenizer attached before.
  const fs::path dir = fs::temp_directory_path() / ("flint_random_tok_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  expect_error([&] { attach_tokenizer(m, dir.string()); }, {dir.string(), "no tokenizer"});
  fs::remove_all(dir);
  EXPECT_FALSE(m.tokenizer.has_value());
  expect_error([&] { attach_tokenizer(m, "/nonexistent/tok.json"); }, {"expected a .gguf file or a directory"});

  // tiny-llama's 512 tokens do not fit a vocabulary of 300.
  LoadedModel small_vocab;
  small_vocab.path = "random:test";
  small_vocab.config = small(find_model_shape("smollm2-135m"));
  expect_error([&] { attach_tokenizer(small_vocab, FLINT_TEST_DATA_DIR "/tiny-llama"); },
               {"512 tokens", "vocab_size 300"});
}

}  // namespace
}  // namespace flint
