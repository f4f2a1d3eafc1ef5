// ModelConfig from GGUF metadata or a HF config.json, and its validation.
#include "model/config.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "kernels/cpu/ops.h"
#include "model/gguf.h"

namespace flint {

namespace {

using nlohmann::json;

// Bounds on a sane decoder-only transformer; they keep every product of sizes
// far from overflowing and reject nonsense from a corrupt file early.
constexpr int32_t kMaxHidden = 1 << 16;
constexpr int32_t kMaxLayers = 1 << 10;
constexpr int32_t kMaxHeads = 1 << 10;
constexpr int32_t kMaxHeadDim = 1 << 10;
constexpr int32_t kMaxFfn = 1 << 20;
constexpr int32_t kMaxVocab = 1 << 24;
constexpr int32_t kMaxContext = 1 << 24;

void check_range(const char* field, int64_t v, int64_t max) {
  if (v <= 0) fail("model config: ", field, " must be positive (got ", v, ")");
  if (v > max) fail("model config: ", field, " ", v, " is over the limit ", max);
}

int32_t to_i32(std::string_view key, int64_t v) {
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
    fail(key, ": value ", v, " is out of range");
  return static_cast<int32_t>(v);
}

Arch arch_from_name(std::string_view name, std::string_view what) {
  if (name == "llama") return Arch::Llama;
  if (name == "qwen2") return Arch::Qwen2;
  if (name == "qwen3") return Arch::Qwen3;
  fail(what, " \"", name, "\" is not supported (llama, qwen2, qwen3)");
}

// ---- GGUF ----

// Llama-3 GGUFs from llama.cpp's converter carry the scaling as a tensor
// rope_freqs.weight (head_dim/2 divisors of inv_freq) rather than as keys. Its
// factor is the largest divisor; the band edges are Meta's (1, 4, 8192), and the
// tensor must match them or the model is refused.
RopeScaling scaling_from_rope_freqs(const Tensor& t, const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  if (t.dtype != DType::F32 || t.numel() != half || t.nbytes != uint64_t(half) * 4)
    fail("tensor ", t.name, ": expected ", half, " F32 values (head_dim / 2)");
  std::vector<float> divisors(static_cast<size_t>(half));
  std::memcpy(divisors.data(), t.data, t.nbytes);
  RopeScaling s;
  for (float d : divisors) s.factor = std::max(s.factor, d);
  if (!(s.factor >= 1.0f) || !std::isfinite(s.factor)) fail("tensor ", t.name, ": divisors must be finite and >= 1");
  if (s.factor == 1.0f) return RopeScaling{};  // no scaling at all

  cpu::RopeParams plain{.head_dim = c.head_dim, .theta = c.rope_theta};
  cpu::RopeParams scaled = plain;
  scaled.scaling_factor = s.factor;
  scaled.low_freq_factor = s.low_freq_factor;
  scaled.high_freq_factor = s.high_freq_factor;
  scaled.original_max_position = s.original_max_position;
  std::vector<float> f0(divisors.size()), f1(divisors.size());
  cpu::rope_inv_freq(plain, f0.data());
  cpu::rope_inv_freq(scaled, f1.data());
  for (size_t i = 0; i < divisors.size(); ++i) {
    const float expect = f0[i] / f1[i];
    if (std::fabs(divisors[i] - expect) > 1e-3f * expect)
      fail("tensor ", t.name, ": divisor ", i, " is ", divisors[i], ", but llama3 scaling (factor ", s.factor,
           ", low 1, high 4, original context 8192) gives ", expect);
  }
  return s;
}

RopeScaling gguf_rope_scaling(const GgufFile& g, const std::string& p, const ModelConfig& c) {
  if (std::optional<std::string> type = g.get_string(p + "rope.scaling.type")) {
    if (*type == "none") return {};
    if (*type != "llama3") fail(p, "rope.scaling.type \"", *type, "\" is not supported (none, llama3)");
    RopeScaling s;
    std::optional<double> factor = g.get_float(p + "rope.scaling.factor");
    if (!factor) fail("key ", p, "rope.scaling.factor: missing from ", g.path());
    s.factor = float(*factor);
    s.low_freq_factor = float(g.get_float(p + "rope.scaling.low_freq_factor").value_or(s.low_freq_factor));
    s.high_freq_factor = float(g.get_float(p + "rope.scaling.high_freq_factor").value_or(s.high_freq_factor));
    if (std::optional<int64_t> n = g.get_int(p + "rope.scaling.original_context_length"))
      s.original_max_position = to_i32(p + "rope.scaling.original_context_length", *n);
    return s;
  }
  if (const Tensor* freqs = g.find("rope_freqs.weight")) return scaling_from_rope_freqs(*freqs, c);
  return {};
}

// ---- HF config.json ----

class HfConfig {
 public:
  explicit HfConfig(const json& j) : j_(j) {}

  const json* get(std::string_view key) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<int64_t> opt_int(std::string_view key) const {
    const json* v = get(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number_integer()) fail("config.json: \"", key, "\" must be an integer, got ", v->dump());
    if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      fail("config.json: \"", key, "\" is out of range");
    return v->get<int64_t>();
  }
  int32_t require_i32(std::string_view key) const {
    std::optional<int64_t> v = opt_int(key);
    if (!v) fail("config.json: missing \"", key, "\"");
    return to_i32(std::string("config.json: \"") + std::string(key) + "\"", *v);
  }
  std::optional<double> opt_float(std::string_view key) const {
    const json* v = get(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) fail("config.json: \"", key, "\" must be a number, got ", v->dump());
    return v->get<double>();
  }
  bool opt_bool(std::string_view key, bool fallback) const {
    const json* v = get(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) fail("config.json: \"", key, "\" must be true or false, got ", v->dump());
    return v->get<bool>();
  }
  std::optional<std::string> opt_string(std::string_view key) const {
    const json* v = get(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) fail("config.json: \"", key, "\" must be a string, got ", v->dump());
    return v->get<std::string>();
  }

 private:
  const json& j_;
};

Arch hf_arch(const HfConfig& c) {
  if (const json* archs = c.get("architectures")) {
    if (!archs->is_array()) fail("config.json: \"architectures\" must be an array");
    for (const json& a : *archs) {
      if (!a.is_string()) continue;
      const std::string name = a.get<std::string>();
      if (name == "LlamaForCausalLM") return Arch::Llama;
      if (name == "Qwen2ForCausalLM") return Arch::Qwen2;
      if (name == "Qwen3ForCausalLM") return Arch::Qwen3;
    }
    fail("config.json: architectures ", archs->dump(),
         " not supported (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)");
  }
  std::optional<std::string> model_type = c.opt_string("model_type");
  if (!model_type) fail("config.json: missing \"architectures\" (and \"model_type\")");
  return arch_from_name(*model_type, "config.json: model_type");
}

// rope_theta and llama3 scaling: older configs write "rope_theta" and
// "rope_scaling" at the top; transformers 5 writes both inside "rope_parameters".
void hf_rope(const HfConfig& c, ModelConfig& out) {
  const json* params = c.get("rope_parameters");
  if (params != nullptr && !params->is_object()) fail("config.json: \"rope_parameters\" must be an object");
  const json* scaling = c.get("rope_scaling");
  if (scaling != nullptr && !scaling->is_object()) fail("config.json: \"rope_scaling\" must be an object");

  std::optional<double> theta = c.opt_float("rope_theta");
  if (!theta && params != nullptr) theta = HfConfig(*params).opt_float("rope_theta");
  if (theta) out.rope_theta = float(*theta);

  const json* rope = scaling != nullptr ? scaling : params;
  if (rope == nullptr) return;
  HfConfig r(*rope);
  std::optional<std::string> type = r.opt_string("rope_type");
  if (!type) type = r.opt_string("type");
  if (!type || *type == "default") return;
  if (*type != "llama3") fail("config.json: rope type \"", *type, "\" is not supported (default, llama3)");
  auto require = [&](const char* key) {
    std::optional<double> v = r.opt_float(key);
    if (!v) fail("config.json: llama3 rope scaling is missing \"", key, "\"");
    return *v;
  };
  out.rope_scaling.factor = float(require("factor"));
  out.rope_scaling.low_freq_factor = float(require("low_freq_factor"));
  out.rope_scaling.high_freq_factor = float(require("high_freq_factor"));
  const double orig = require("original_max_position_embeddings");
  if (orig != std::floor(orig) || orig < 1 || orig > kMaxContext)
    fail("config.json: original_max_position_embeddings ", orig, " is not a valid context length");
  out.rope_scaling.original_max_position = int32_t(orig);
}

}  // namespace

std::string_view arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "llama";
    case Arch::Qwen2: return "qwen2";
    case Arch::Qwen3: return "qwen3";
  }
  return "?";
}

void ModelConfig::validate() const {
  check_range("vocab_size", vocab_size, kMaxVocab);
  check_range("hidden_size", hidden_size, kMaxHidden);
  check_range("num_layers", num_layers, kMaxLayers);
  check_range("num_qo_heads", num_qo_heads, kMaxHeads);
  check_range("num_kv_heads", num_kv_heads, kMaxHeads);
  check_range("head_dim", head_dim, kMaxHeadDim);
  check_range("ffn_size", ffn_size, kMaxFfn);
  check_range("max_context", max_context, kMaxContext);
  if (num_qo_heads % num_kv_heads != 0)
    fail("model config: num_qo_heads ", num_qo_heads, " is not a multiple of num_kv_heads ", num_kv_heads);
  if (head_dim % 2 != 0) fail("model config: head_dim ", head_dim, " must be even (RoPE rotates pairs)");
  if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta))
    fail("model config: rope_theta ", rope_theta, " must be positive and finite");
  if (!(rms_eps > 0.0f) || !std::isfinite(rms_eps)) fail("model config: rms_eps ", rms_eps, " must be positive and finite");
  const RopeScaling& s = rope_scaling;
  if (s.factor != 0.0f) {
    if (!(s.factor >= 1.0f) || !std::isfinite(s.factor))
      fail("model config: rope_scaling.factor ", s.factor, " must be at least 1 (or 0 for none)");
    if (!(s.low_freq_factor > 0.0f) || !(s.high_freq_factor > s.low_freq_factor) || !std::isfinite(s.high_freq_factor))
      fail("model config: rope_scaling.low_freq_factor ", s.low_freq_factor, " and high_freq_factor ",
           s.high_freq_factor, " must satisfy 0 < low < high");
    check_range("rope_scaling.original_max_position", s.original_max_position, kMaxContext);
  }
}

std::string ModelConfig::describe() const {
  std::ostringstream os;
  os << arch_name(arch) << ": " << num_layers << " layers, hidden " << hidden_size << ", heads " << num_qo_heads
     << " (kv " << num_kv_heads << ", head_dim " << head_dim << "), ffn " << ffn_size << ", vocab " << vocab_size
     << ", context " << max_context << ", rope " << (rope_style == RopeStyle::Halves ? "halves" : "interleaved")
     << " theta " << rope_theta;
  if (rope_scaling.factor > 0.0f)
    os << " (llama3 x" << rope_scaling.factor << ", original " << rope_scaling.original_max_position << ")";
  os << ", rms_eps " << rms_eps;
  if (tied_embeddings) os << ", tied embeddings";
  if (qkv_bias) os << ", qkv bias";
  if (qk_norm) os << ", qk norm";
  return os.str();
}

ModelConfig config_from_gguf(const GgufFile& g) {
  ModelConfig c;
  const std::string arch = g.require_string("general.architecture");
  c.arch = arch_from_name(arch, "general.architecture");
  const std::string p = arch + ".";
  auto req = [&](const std::string& key) { return to_i32(key, g.require_int(p + key)); };

  c.num_layers = req("block_count");
  c.hidden_size = req("embedding_length");
  c.ffn_size = req("feed_forward_length");
  c.num_qo_heads = req("attention.head_count");
  c.max_context = req("context_length");
  std::optional<int64_t> kv = g.get_int(p + "attention.head_count_kv");
  c.num_kv_heads = kv ? to_i32(p + "attention.head_count_kv", *kv) : c.num_qo_heads;
  if (std::optional<int64_t> kl = g.get_int(p + "attention.key_length")) {
    c.head_dim = to_i32(p + "attention.key_length", *kl);
    std::optional<int64_t> vl = g.get_int(p + "attention.value_length");
    if (vl && *vl != *kl) fail(p, "attention.value_length ", *vl, " differs from key_length ", *kl);
  } else {
    if (c.num_qo_heads <= 0 || c.hidden_size % c.num_qo_heads != 0)
      fail(p, "embedding_length ", c.hidden_size, " is not a multiple of attention.head_count ", c.num_qo_heads);
    c.head_dim = c.hidden_size / c.num_qo_heads;
  }

  std::optional<double> eps = g.get_float(p + "attention.layer_norm_rms_epsilon");
  if (!eps) fail("key ", p, "attention.layer_norm_rms_epsilon: missing from ", g.path());
  c.rms_eps = float(*eps);
  c.rope_theta = float(g.get_float(p + "rope.freq_base").value_or(10000.0));

  if (const GgufValue* tokens = g.find_value("tokenizer.ggml.tokens")) {
    const auto* list = std::get_if<std::vector<std::string>>(&tokens->value);
    if (list == nullptr) fail("key tokenizer.ggml.tokens: expected an array of strings");
    c.vocab_size = to_i32("tokenizer.ggml.tokens", int64_t(list->size()));
  } else if (std::optional<int64_t> v = g.get_int(p + "vocab_size")) {
    c.vocab_size = to_i32(p + "vocab_size", *v);
  } else {
    fail(g.path(), ": no vocabulary size (neither tokenizer.ggml.tokens nor ", p, "vocab_size)");
  }

  c.tied_embeddings = g.find("output.weight") == nullptr;
  // llama.cpp's converter permutes llama's Q/K rows to pair adjacent dims; it
  // leaves qwen's alone.
  c.rope_style = c.arch == Arch::Llama ? RopeStyle::Interleaved : RopeStyle::Halves;
  c.qkv_bias = c.arch == Arch::Qwen2 || g.find("blk.0.attn_q.bias") != nullptr;
  c.qk_norm = c.arch == Arch::Qwen3;
  c.validate();  // before the rope_freqs check, which needs head_dim
  c.rope_scaling = gguf_rope_scaling(g, p, c);
  c.validate();
  return c;
}

ModelConfig config_from_hf_json(std::string_view config_json) {
  json j = json::parse(config_json.begin(), config_json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail("config.json: not valid JSON");
  if (!j.is_object()) fail("config.json: not a JSON object");
  HfConfig h(j);

  ModelConfig c;
  c.arch = hf_arch(h);
  c.hidden_size = h.require_i32("hidden_size");
  c.num_layers = h.require_i32("num_hidden_layers");
  c.num_qo_heads = h.require_i32("num_attention_heads");
  c.ffn_size = h.require_i32("intermediate_size");
  c.vocab_size = h.require_i32("vocab_size");
  c.max_context = h.require_i32("max_position_embeddings");
  c.num_kv_heads = h.opt_int("num_key_value_heads") ? h.require_i32("num_key_value_heads") : c.num_qo_heads;
  if (h.opt_int("head_dim")) {
    c.head_dim = h.require_i32("head_dim");
  } else if (c.arch == Arch::Qwen3) {
    c.head_dim = 128;  // Qwen3Config's default
  } else {
    if (c.num_qo_heads <= 0 || c.hidden_size % c.num_qo_heads != 0)
      fail("config.json: hidden_size ", c.hidden_size, " is not a multiple of num_attention_heads ", c.num_qo_heads);
    c.head_dim = c.hidden_size / c.num_qo_heads;
  }
  c.rms_eps = float(h.opt_float("rms_norm_eps").value_or(1e-6));
  c.tied_embeddings = h.opt_bool("tie_word_embeddings", false);
  hf_rope(h, c);
  c.rope_style = RopeStyle::Halves;  // HF checkpoints keep q/k rows unpermuted

  if (std::optional<std::string> act = h.opt_string("hidden_act"); act && *act != "silu")
    fail("config.json: hidden_act \"", *act, "\" is not supported (silu)");
  if (h.opt_bool("mlp_bias", false)) fail("config.json: mlp_bias is not supported");
  if (h.opt_bool("use_sliding_window", false)) fail("config.json: use_sliding_window is not supported");
  // Qwen2 always has q/k/v biases; llama and qwen3 have them (and an o_proj bias,
  // which bind_weights refuses) when attention_bias is set.
  c.qkv_bias = c.arch == Arch::Qwen2 || h.opt_bool("attention_bias", false);
  c.qk_norm = c.arch == Arch::Qwen3;
  c.validate();
  return c;
}

}  // namespace flint
