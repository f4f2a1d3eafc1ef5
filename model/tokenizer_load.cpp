// Tokenizer readers: GGUF metadata (tokenizer.ggml.*) and HF tokenizer.json (+
// tokenizer_config.json), both turned into a VocabSpec that Impl checks.
#include <nlohmann/json.hpp>

#include <climits>

#include "common/error.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"

namespace flint {
namespace {

using nlohmann::json;

// ---- GGUF
struct GgufPre {
  std::string_view name;
  PreTokenizer pre;
  bool ignore_merges;  // llama.cpp's defaults for the Llama-3 family
  bool add_bos;
};
constexpr GgufPre kGgufPres[] = {
    {"smollm", PreTokenizer::SmolLM, false, false},
    {"gpt-2", PreTokenizer::Gpt2, false, false},
    {"llama3", PreTokenizer::Llama3, true, true},
    {"llama-v3", PreTokenizer::Llama3, true, true},
    {"llama-bpe", PreTokenizer::Llama3, true, true},
    {"qwen2", PreTokenizer::Qwen2, false, false},
    {"deepseek-r1-qwen", PreTokenizer::Qwen2, false, false},
};

std::optional<int32_t> gguf_id(const GgufFile& gguf, const std::string& source, std::string_view key) {
  const std::optional<int64_t> v = gguf.get_int(key);
  if (!v) return std::nullopt;
  if (*v < 0 || *v > INT32_MAX) fail(source, ": ", key, " = ", *v, " is not a token id");
  return int32_t(*v);
}

TokenKind gguf_kind(int64_t type, size_t id, const std::string& source) {
  switch (type) {
    case 0: case 1: case 6: return TokenKind::Normal;  // undefined, normal, byte
    case 2: case 3: return TokenKind::Control;         // unknown, control
    case 4: return TokenKind::UserDefined;
    case 5: return TokenKind::Unused;
    default: fail(source, ": token ", id, " has token_type ", type, " (known: 0..6)");
  }
}

// ---- tokenizer.json helpers: every access checks the type and names the path.
const json& member(const json& obj, const char* key, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key)) fail(where, ": \"", key, "\" is missing");
  return obj.at(key);
}

std::string string_at(const json& v, const std::string& where) {
  if (!v.is_string()) fail(where, ": expected a string, got ", v.type_name());
  return v.get<std::string>();
}

bool bool_or(const json& obj, const char* key, bool fallback, const std::string& where) {
  if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
  if (!obj.at(key).is_boolean()) fail(where, ".", key, ": expected true or false");
  return obj.at(key).get<bool>();
}

std::string type_of(const json& node) {
  return node.is_object() && node.contains("type") && node.at("type").is_string() ? node.at("type").get<std::string>()
                                                                                 : std::string();
}

int32_t id_at(const json& v, const std::string& where) {
  if (!v.is_number_integer()) fail(where, ": expected an integer token id, got ", v.dump());
  const int64_t id = v.get<int64_t>();
  if (id < 0 || id > INT32_MAX) fail(where, ": token id ", id, " is out of range");
  return int32_t(id);
}

json parse_json(std::string_view text, const char* name) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(name, ": not valid JSON");
  if (!j.is_object()) fail(name, ": expected a JSON object at the top level");
  return j;
}

bool is_byte_level(const json& node, bool use_regex) {
  if (type_of(node) != "ByteLevel") return false;
  if (bool_or(node, "add_prefix_space", false, "tokenizer.json: pre_tokenizer ByteLevel"))
    fail("tokenizer.json: pre_tokenizer ByteLevel with add_prefix_space=true is not supported");
  return bool_or(node, "use_regex", true, "tokenizer.json: pre_tokenizer ByteLevel") == use_regex;
}

// The Split regex of an isolated, non-inverted Split node, if it is one.
std::optional<std::string> isolated_split_regex(const json& node) {
  if (type_of(node) != "Split" || !node.contains("pattern") || !node.at("pattern").is_object()) return std::nullopt;
  const json& pattern = node.at("pattern");
  if (!pattern.contains("Regex") || !pattern.at("Regex").is_string()) return std::nullopt;
  if (!node.contains("behavior") || node.at("behavior") != "Isolated") return std::nullopt;
  if (bool_or(node, "invert", false, "tokenizer.json: pre_tokenizer Split")) return std::nullopt;
  return pattern.at("Regex").get<std::string>();
}

PreTokenizer detect_pre_tokenizer(const json& node) {
  if (is_byte_level(node, true)) return PreTokenizer::Gpt2;
  if (type_of(node) == "Sequence" && node.contains("pretokenizers") && node.at("pretokenizers").is_array()) {
    const json& seq = node.at("pretokenizers");
    if (seq.size() == 1 && is_byte_level(seq[0], true)) return PreTokenizer::Gpt2;
    if (seq.size() == 2) {
      const json& first = seq[0];
      const bool digits = (type_of(first) == "Digits" &&
                           bool_or(first, "individual_digits", false, "tokenizer.json: pre_tokenizer Digits")) ||
                          isolated_split_regex(first) == std::string(kDigitSplitRegex);
      if (digits && is_byte_level(seq[1], true)) return PreTokenizer::SmolLM;
      if (auto regex = isolated_split_regex(first); regex && is_byte_level(seq[1], false))
        if (auto pre = pre_tokenizer_from_split_regex(*regex)) return *pre;
    }
  }
  std::string dump = node.dump();
  if (dump.size() > 400) dump = dump.substr(0, 400) + "...";
  fail("tokenizer.json: unsupported pre_tokenizer ", dump,
       "; supported: ByteLevel (GPT-2), Digits(individual_digits) or Split \\p{N} then ByteLevel (SmolLM2), "
       "Split with the Llama-3 or Qwen2 pattern then ByteLevel(use_regex=false)");
}

// The token a TemplateProcessing puts before a single sequence, if any.
std::optional<std::string> template_bos(const json& node) {
  if (type_of(node) == "Sequence" && node.contains("processors") && node.at("processors").is_array()) {
    for (const json& p : node.at("processors"))
      if (auto bos = template_bos(p)) return bos;
    return std::nullopt;
  }
  if (type_of(node) != "TemplateProcessing" || !node.contains("single") || !node.at("single").is_array() ||
      node.at("single").empty())
    return std::nullopt;
  const json& first = node.at("single")[0];
  if (!first.is_object() || !first.contains("SpecialToken")) return std::nullopt;
  return string_at(member(first.at("SpecialToken"), "id", "tokenizer.json: post_processor"),
                   "tokenizer.json: post_processor SpecialToken id");
}

// tokenizer_config.json names special tokens as a string, {"content": ...}, or null.
std::optional<std::string> config_token(const json& config, const char* key) {
  if (!config.contains(key) || config.at(key).is_null()) return std::nullopt;
  const json& v = config.at(key);
  const std::string where = std::string("tokenizer_config.json: ") + key;
  if (v.is_object()) return string_at(member(v, "content", where), where);
  return string_at(v, where);
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const GgufFile& gguf) {
  VocabSpec spec;
  spec.source = "GGUF " + gguf.path() + ": tokenizer";
  const std::string model = gguf.get_string("tokenizer.ggml.model").value_or("");
  if (model != "gpt2")
    fail(spec.source, ": tokenizer.ggml.model is \"", model, "\"; only byte-level BPE (\"gpt2\") is supported");
  const std::string pre_name = gguf.get_string("tokenizer.ggml.pre").value_or("default");
  const GgufPre* pre = nullptr;
  for (const GgufPre& p : kGgufPres)
    if (p.name == pre_name) pre = &p;
  if (pre == nullptr) {
    std::string known;
    for (const GgufPre& p : kGgufPres) known += std::string(known.empty() ? "" : ", ") + std::string(p.name);
    fail(spec.source, ": tokenizer.ggml.pre \"", pre_name, "\" is not supported (supported: ", known, ")");
  }
  spec.pre = pre->pre;
  spec.ignore_merges = pre->ignore_merges;

  std::vector<std::string> texts = gguf.get_string_array("tokenizer.ggml.tokens");
  const std::vector<int64_t> types = gguf.get_int_array("tokenizer.ggml.token_type");
  if (texts.empty()) fail(spec.source, ": tokenizer.ggml.tokens is missing or empty");
  if (!types.empty() && types.size() != texts.size())
    fail(spec.source, ": tokenizer.ggml.token_type has ", types.size(), " entries for ", texts.size(), " tokens");
  spec.tokens.resize(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    spec.tokens[i].text = std::move(texts[i]);
    if (!types.empty()) spec.tokens[i].kind = gguf_kind(types[i], i, spec.source);
  }

  const std::vector<std::string> merges = gguf.get_string_array("tokenizer.ggml.merges");
  spec.merges.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const size_t space = merges[rank].find(' ', 1);
    if (space == std::string::npos)
      fail(spec.source, ": merge ", rank, " (\"", merges[rank], "\") is not two tokens separated by a space");
    spec.merges.emplace_back(merges[rank].substr(0, space), merges[rank].substr(space + 1));
  }

  spec.bos = gguf_id(gguf, spec.source, "tokenizer.ggml.bos_token_id");
  spec.eos = gguf_id(gguf, spec.source, "tokenizer.ggml.eos_token_id");
  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
    if (auto id = gguf_id(gguf, spec.source, key)) spec.extra_eog.push_back(*id);
  spec.add_bos = gguf.get_bool("tokenizer.ggml.add_bos_token").value_or(pre->add_bos) && spec.bos.has_value();
  return Tokenizer(std::make_unique<Impl>(std::move(spec)));
}

namespace {

VocabSpec hf_vocab_spec(std::string_view tokenizer_json, std::string_view tokenizer_config_json) {
  VocabSpec spec;
  spec.source = "tokenizer.json";
  const json root = parse_json(tokenizer_json, "tokenizer.json");
  const json& model = member(root, "model", "tokenizer.json");
  const std::string model_type = model.contains("type") ? string_at(model.at("type"), "tokenizer.json: model.type")
                                                        : std::string("BPE");
  if (model_type != "BPE") fail("tokenizer.json: model.type is \"", model_type, "\"; only BPE is supported");
  if (bool_or(model, "byte_fallback", false, "tokenizer.json: model"))
    fail("tokenizer.json: model.byte_fallback (sentencepiece-style BPE) is not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && !model.at(key).is_null() && model.at(key) != "")
      fail("tokenizer.json: model.", key, " is not supported");
  if (model.contains("dropout") && !model.at("dropout").is_null() && model.at("dropout") != 0.0)
    fail("tokenizer.json: model.dropout is not supported");
  spec.ignore_merges = bool_or(model, "ignore_merges", false, "tokenizer.json: model");

  // Ids: the vocabulary and the added tokens together must cover 0..n-1 exactly.
  const json& vocab = member(model, "vocab", "tokenizer.json: model");
  if (!vocab.is_object()) fail("tokenizer.json: model.vocab must be an object of token -> id");
  const json empty = json::array();
  const json& added = root.contains("added_tokens") && !root.at("added_tokens").is_null() ? root.at("added_tokens")
                                                                                          : empty;
  if (!added.is_array()) fail("tokenizer.json: added_tokens must be an array");
  int64_t max_id = -1;
  for (const auto& [text, id] : vocab.items()) max_id = std::max<int64_t>(max_id, id_at(id, "tokenizer.json: model.vocab[\"" + text + "\"]"));
  for (const json& a : added) max_id = std::max<int64_t>(max_id, id_at(member(a, "id", "tokenizer.json: added_tokens[]"), "tokenizer.json: added_tokens[].id"));
  if (max_id < 0) fail("tokenizer.json: the vocabulary is empty");
  if (size_t(max_id) >= vocab.size() + added.size())
    fail("tokenizer.json: token ids are not contiguous (largest id ", max_id, " with ", vocab.size(),
         " vocabulary and ", added.size(), " added tokens)");
  spec.tokens.resize(size_t(max_id) + 1);
  std::vector<bool> seen(spec.tokens.size());
  for (const auto& [text, id_json] : vocab.items()) {
    const int32_t id = id_json.get<int32_t>();
    if (seen[id]) fail("tokenizer.json: id ", id, " is given to both \"", spec.tokens[id].text, "\" and \"", text, "\"");
    seen[id] = true;
    spec.tokens[id].text = text;
  }
  for (const json& a : added) {
    const int32_t id = a.at("id").get<int32_t>();
    const std::string where = "tokenizer.json: added token " + std::to_string(id);
    const std::string content = string_at(member(a, "content", where), where + " content");
    if (seen[id] && spec.tokens[id].text != content)
      fail(where, " \"", content, "\" has the id of vocabulary token \"", spec.tokens[id].text, "\"");
    if (bool_or(a, "single_word", false, where)) fail(where, " \"", content, "\": single_word is not supported");
    seen[id] = true;
    TokenSpec& t = spec.tokens[id];
    t.text = content;
    t.kind = bool_or(a, "special", false, where) ? TokenKind::Control : TokenKind::UserDefined;
    t.lstrip = bool_or(a, "lstrip", false, where);
    t.rstrip = bool_or(a, "rstrip", false, where);
  }
  for (size_t id = 0; id < seen.size(); ++id)
    if (!seen[id]) fail("tokenizer.json: token ids are not contiguous: no token has id ", id);

  const json& merges = member(model, "merges", "tokenizer.json: model");
  if (!merges.is_array()) fail("tokenizer.json: model.merges must be an array");
  spec.merges.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    const std::string where = "tokenizer.json: merge " + std::to_string(rank);
    if (m.is_string()) {  // "a b"
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        fail(where, " (\"", s, "\") is not two tokens separated by one space");
      spec.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2) {  // ["a", "b"]
      spec.merges.emplace_back(string_at(m[0], where), string_at(m[1], where));
    } else {
      fail(where, ": expected \"a b\" or [\"a\", \"b\"], got ", m.dump());
    }
  }
  if (model.contains("unk_token") && !model.at("unk_token").is_null()) {
    const std::string unk = string_at(model.at("unk_token"), "tokenizer.json: model.unk_token");
    if (!vocab.contains(unk)) fail("tokenizer.json: model.unk_token \"", unk, "\" is not in the vocabulary");
    spec.unk = vocab.at(unk).get<int32_t>();
    spec.fuse_unk = bool_or(model, "fuse_unk", false, "tokenizer.json: model");
  }

  const json null_node;
  spec.pre = detect_pre_tokenizer(root.contains("pre_tokenizer") ? root.at("pre_tokenizer") : null_node);
  if (root.contains("normalizer") && !root.at("normalizer").is_null()) {
    // NFC is accepted and not applied (as llama.cpp): text that is already NFC, which
    // is nearly all text, encodes the same. Anything else would change the ids.
    if (type_of(root.at("normalizer")) != "NFC")
      fail("tokenizer.json: normalizer ", root.at("normalizer").dump(), " is not supported (only NFC or none)");
  }
  if (root.contains("decoder") && !root.at("decoder").is_null() && type_of(root.at("decoder")) != "ByteLevel")
    fail("tokenizer.json: decoder ", type_of(root.at("decoder")), " is not supported (only ByteLevel)");

  const auto id_of = [&](const std::string& text, const char* what) {
    for (size_t id = 0; id < spec.tokens.size(); ++id)
      if (spec.tokens[id].text == text) return int32_t(id);
    fail(what, " \"", text, "\" is not a token");
  };
  if (root.contains("post_processor") && !root.at("post_processor").is_null())
    if (auto bos = template_bos(root.at("post_processor"))) {
      spec.bos = id_of(*bos, "tokenizer.json: post_processor's first token");
      spec.add_bos = true;
    }
  if (!tokenizer_config_json.empty()) {
    const json config = parse_json(tokenizer_config_json, "tokenizer_config.json");
    if (auto bos = config_token(config, "bos_token")) spec.bos = id_of(*bos, "tokenizer_config.json: bos_token");
    if (auto eos = config_token(config, "eos_token")) spec.eos = id_of(*eos, "tokenizer_config.json: eos_token");
    spec.add_bos = bool_or(config, "add_bos_token", spec.add_bos, "tokenizer_config.json");
  }
  return spec;
}

}  // namespace

Tokenizer Tokenizer::from_hf_json(std::string_view tokenizer_json, std::string_view tokenizer_config_json) {
  try {
    return Tokenizer(std::make_unique<Impl>(hf_vocab_spec(tokenizer_json, tokenizer_config_json)));
  } catch (const json::exception& e) {  // a JSON access the checks above did not foresee
    fail("tokenizer.json: ", e.what());
  }
}

}  // namespace flint
