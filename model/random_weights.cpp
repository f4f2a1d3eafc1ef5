// Random-weight models: a counter-based generator (splitmix64 of seed, tensor name and index), so the
// tensors fill in parallel with no shared state and every value is reproducible on its own.
#include "model/random_weights.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/thread_pool.h"
#include "kernels/cpu/quant.h"
#include "model/model_shapes.h"
#include "model/model_weights.h"

namespace flint {

namespace {

uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (char c : s) h = (h ^ uint8_t(c)) * 0x100000001B3ull;
  return h;
}

uint64_t tensor_seed(uint64_t seed, std::string_view name) { return splitmix64(seed ^ splitmix64(fnv1a(name))); }

// Four 16-bit uniforms of one hash summed (Irwin-Hall): bell-shaped, mean 0, scaled to std 1.
float unit_value(uint64_t tseed, uint64_t index) {
  const uint64_t h = splitmix64(tseed + (index + 1) * 0x9E3779B97F4A7C15ull);
  const uint32_t sum = uint32_t(h & 0xFFFF) + uint32_t((h >> 16) & 0xFFFF) + uint32_t((h >> 32) & 0xFFFF) + uint32_t(h >> 48);
  // Each term is uniform on [0, 65535]: mean 2·65535 and variance 4·65536²/12 for the sum.
  constexpr float kMean = 2.0f * 65535.0f, kInvStd = 1.7320508f / 65536.0f;  // sqrt(3) / 65536
  return (float(sum) - kMean) * kInvStd;
}

int64_t parse_int(std::string_view text, std::string_view what, std::string_view spec) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size())
    fail("random model \"", spec, "\": ", what, " \"", text, "\" is not an integer");
  return v;
}

}  // namespace

float random_weight_unit(uint64_t seed, std::string_view name, uint64_t index) {
  return unit_value(tensor_seed(seed, name), index);
}

ModelConfig RandomModelSpec::config() const {
  ModelConfig c = find_model_shape(shape).config;
  if (num_layers != 0) {
    if (num_layers < 0 || num_layers > c.num_layers)
      fail("random model ", shape, ": layers=", num_layers, " must be in [1, ", c.num_layers, "]");
    c.num_layers = num_layers;
  }
  c.validate();
  return c;
}

std::string RandomModelSpec::to_string() const {
  std::string s = shape + ":";
  if (num_layers != 0) s += "layers=" + std::to_string(num_layers) + ",";
  return s + "seed=" + std::to_string(seed);
}

RandomModelSpec parse_random_model_spec(std::string_view text) {
  RandomModelSpec spec;
  const size_t colon = text.find(':');
  spec.shape = std::string(text.substr(0, colon));
  find_model_shape(spec.shape);  // an unknown name fails here, listing the known ones
  if (colon == std::string_view::npos) return spec;
  std::string_view rest = text.substr(colon + 1);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const size_t eq = item.find('=');
    const std::string_view key = item.substr(0, eq);
    if (eq == std::string_view::npos) fail("random model \"", text, "\": \"", item, "\" is not KEY=VALUE (layers=N, seed=S)");
    const std::string_view value = item.substr(eq + 1);
    if (key == "layers") {
      spec.num_layers = int32_t(parse_int(value, "layers", text));
      if (spec.num_layers < 1) fail("random model \"", text, "\": layers must be at least 1");
    } else if (key == "seed") {
      const int64_t s = parse_int(value, "seed", text);
      if (s < 0) fail("random model \"", text, "\": seed must not be negative");
      spec.seed = uint64_t(s);
    } else {
      fail("random model \"", text, "\": unknown key \"", key, "\" (layers, seed)");
    }
  }
  spec.config();  // layers out of range fails here
  return spec;
}

RandomWeightSource::RandomWeightSource(const ModelConfig& c, uint64_t seed, ThreadPool* pool) {
  c.validate();
  const int64_t hidden = c.hidden_size, vocab = c.vocab_size, ffn = c.ffn_size, hd = c.head_dim;
  const int64_t q_dim = int64_t(c.num_qo_heads) * hd, kv_dim = int64_t(c.num_kv_heads) * hd;
  const Fill embedding{0.0f, 2.0f / std::sqrt(float(hidden))}, norm{1.0f, 0.1f}, bias{0.0f, 0.1f};
  auto linear = [&](std::string name, int64_t out, int64_t in) {
    add(std::move(name), {out, in}, Fill{0.0f, 1.0f / std::sqrt(float(in))});
  };

  add("model.embed_tokens.weight", {vocab, hidden}, embedding);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string b = "model.layers." + std::to_string(l) + ".", a = b + "self_attn.", m = b + "mlp.";
    add(b + "input_layernorm.weight", {hidden}, norm);
    linear(a + "q_proj.weight", q_dim, hidden);
    linear(a + "k_proj.weight", kv_dim, hidden);
    linear(a + "v_proj.weight", kv_dim, hidden);
    if (c.qkv_bias) {
      add(a + "q_proj.bias", {q_dim}, bias);
      add(a + "k_proj.bias", {kv_dim}, bias);
      add(a + "v_proj.bias", {kv_dim}, bias);
    }
    if (c.qk_norm) {
      add(a + "q_norm.weight", {hd}, norm);
      add(a + "k_norm.weight", {hd}, norm);
    }
    linear(a + "o_proj.weight", hidden, q_dim);
    add(b + "post_attention_layernorm.weight", {hidden}, norm);
    linear(m + "gate_proj.weight", ffn, hidden);
    linear(m + "up_proj.weight", ffn, hidden);
    linear(m + "down_proj.weight", hidden, ffn);
  }
  add("model.norm.weight", {hidden}, norm);
  if (!c.tied_embeddings) add("lm_head.weight", {vocab, hidden}, embedding);

  // Not zeroed by us (every byte below is written; the kernel zeroes pages as they are touched). No
  // MADV_HUGEPAGE: on the build VM faulting 2 GB in took 9.0 s with it and 4.3 s without.
  const size_t arena_bytes = std::max<size_t>(total_bytes_, 1);
  void* p = mmap(nullptr, arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    fail("random weights: cannot allocate ", double(arena_bytes) / 1e9, " GB (", std::strerror(errno), ")");
  arena_ = std::unique_ptr<uint8_t, Unmap>(static_cast<uint8_t*>(p), Unmap{arena_bytes});

  for (size_t i = 0; i < tensors_.size(); ++i) {
    Tensor& t = tensors_[i];
    auto* out = reinterpret_cast<uint16_t*>(arena_.get() + offsets_[i]);
    t.data = reinterpret_cast<const uint8_t*>(out);
    const uint64_t tseed = tensor_seed(seed, t.name);
    const Fill f = fills_[i];
    parallel_for(pool, t.numel(), int64_t(1) << 16, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) out[j] = cpu::f32_to_bf16(f.mean + f.stddev * unit_value(tseed, uint64_t(j)));
    });
    index_.emplace(t.name, i);
  }
}

void RandomWeightSource::Unmap::operator()(uint8_t* p) const { munmap(p, size); }

void RandomWeightSource::add(std::string name, std::vector<int64_t> shape, Fill fill) {
  Tensor t;
  t.name = std::move(name);
  t.dtype = DType::BF16;
  t.shape = std::move(shape);
  t.nbytes = uint64_t(t.numel()) * 2;
  offsets_.push_back(total_bytes_);
  total_bytes_ += (t.nbytes + 255) / 256 * 256;  // every tensor 256-byte aligned, as a GPU copy wants
  fills_.push_back(fill);
  tensors_.push_back(std::move(t));
}

const Tensor* RandomWeightSource::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

LoadedModel load_random_model(const RandomModelSpec& spec, int num_threads) {
  LoadedModel m;
  m.path = "random:" + spec.to_string();
  m.config = spec.config();
  ThreadPool pool(num_threads);
  m.source = std::make_unique<RandomWeightSource>(m.config, spec.seed, &pool);
  m.weights = bind_weights(*m.source, m.config, WeightNaming::HuggingFace);
  return m;
}

}  // namespace flint
