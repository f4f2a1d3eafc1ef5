// bind_weights: finds each tensor a config needs by its GGUF or HF name and
// checks its shape; refuses tensors the config cannot use (they would be ignored
// and the model would compute something else).
#include "model/model_weights.h"

#include <sstream>
#include <string>

#include "common/error.h"

namespace flint {

namespace {

// The names of one layer's tensors in one naming scheme.
struct LayerNames {
  std::string attn_norm, wq, wk, wv, bq, bk, bv, bo, q_norm, k_norm, wo, ffn_norm, w_gate, w_up, w_down;
  std::string b_gate, b_up, b_down;  // never supported; named to refuse them
};

LayerNames layer_names(WeightNaming naming, int layer) {
  const std::string n = std::to_string(layer);
  if (naming == WeightNaming::Gguf) {
    const std::string b = "blk." + n + ".";
    return {b + "attn_norm.weight",   b + "attn_q.weight",      b + "attn_k.weight",     b + "attn_v.weight",
            b + "attn_q.bias",        b + "attn_k.bias",        b + "attn_v.bias",       b + "attn_output.bias",
            b + "attn_q_norm.weight", b + "attn_k_norm.weight", b + "attn_output.weight", b + "ffn_norm.weight",
            b + "ffn_gate.weight",    b + "ffn_up.weight",      b + "ffn_down.weight",   b + "ffn_gate.bias",
            b + "ffn_up.bias",        b + "ffn_down.bias"};
  }
  const std::string b = "model.layers." + n + ".";
  const std::string a = b + "self_attn.", m = b + "mlp.";
  return {b + "input_layernorm.weight", a + "q_proj.weight",  a + "k_proj.weight",  a + "v_proj.weight",
          a + "q_proj.bias",            a + "k_proj.bias",    a + "v_proj.bias",    a + "o_proj.bias",
          a + "q_norm.weight",          a + "k_norm.weight",  a + "o_proj.weight",  b + "post_attention_layernorm.weight",
          m + "gate_proj.weight",       m + "up_proj.weight", m + "down_proj.weight", m + "gate_proj.bias",
          m + "up_proj.bias",           m + "down_proj.bias"};
}

class Binder {
 public:
  explicit Binder(const WeightSource& source) : source_(source) {}

  // The tensor `name`, which must have exactly `shape`.
  const Tensor* require(const std::string& name, std::vector<int64_t> shape) const {
    const Tensor& t = source_.get(name);
    if (t.shape != shape) fail("tensor ", name, ": shape ", shape_string(t.shape), ", expected ", shape_string(shape));
    return &t;
  }
  // A tensor the config does not use must not be there.
  void refuse(const std::string& name, const char* why) const {
    if (source_.find(name) != nullptr) fail("tensor ", name, ": present, but ", why);
  }

 private:
  const WeightSource& source_;
};

}  // namespace

ModelWeights bind_weights(const WeightSource& source, const ModelConfig& c, WeightNaming naming) {
  c.validate();
  const bool gguf = naming == WeightNaming::Gguf;
  const int64_t hidden = c.hidden_size, vocab = c.vocab_size, ffn = c.ffn_size, hd = c.head_dim;
  const int64_t q_dim = int64_t(c.num_qo_heads) * hd, kv_dim = int64_t(c.num_kv_heads) * hd;
  Binder b(source);

  ModelWeights w;
  w.tok_embd = b.require(gguf ? "token_embd.weight" : "model.embed_tokens.weight", {vocab, hidden});
  w.output_norm = b.require(gguf ? "output_norm.weight" : "model.norm.weight", {hidden});
  // Tied: HF files may still hold an lm_head.weight copy, which the model ignores.
  w.output = c.tied_embeddings ? w.tok_embd : b.require(gguf ? "output.weight" : "lm_head.weight", {vocab, hidden});

  w.layers.resize(size_t(c.num_layers));
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerNames n = layer_names(naming, l);
    LayerWeights& lw = w.layers[size_t(l)];
    lw.attn_norm = b.require(n.attn_norm, {hidden});
    lw.wq = b.require(n.wq, {q_dim, hidden});
    lw.wk = b.require(n.wk, {kv_dim, hidden});
    lw.wv = b.require(n.wv, {kv_dim, hidden});
    if (c.qkv_bias) {
      lw.maybe_bq = b.require(n.bq, {q_dim});
      lw.maybe_bk = b.require(n.bk, {kv_dim});
      lw.maybe_bv = b.require(n.bv, {kv_dim});
    } else {
      for (const std::string* name : {&n.bq, &n.bk, &n.bv}) b.refuse(*name, "the config has no q/k/v bias");
    }
    if (c.qk_norm) {
      lw.maybe_q_norm = b.require(n.q_norm, {hd});
      lw.maybe_k_norm = b.require(n.k_norm, {hd});
    } else {
      for (const std::string* name : {&n.q_norm, &n.k_norm}) b.refuse(*name, "the config has no q/k norm");
    }
    lw.wo = b.require(n.wo, {hidden, q_dim});
    b.refuse(n.bo, "Flint has no attention output bias");
    lw.ffn_norm = b.require(n.ffn_norm, {hidden});
    lw.w_gate = b.require(n.w_gate, {ffn, hidden});
    lw.w_up = b.require(n.w_up, {ffn, hidden});
    lw.w_down = b.require(n.w_down, {hidden, ffn});
    for (const std::string* name : {&n.b_gate, &n.b_up, &n.b_down}) b.refuse(*name, "Flint has no MLP biases");
  }
  // A layer past the config's count means the config and the file disagree.
  b.refuse(layer_names(naming, c.num_layers).wq, "the config has fewer layers");
  return w;
}

}  // namespace flint
