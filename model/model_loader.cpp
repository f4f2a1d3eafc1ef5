// load_model: picks the reader by the path's kind and puts config, weights,
// tokenizer and chat template source together.
#include "model/model_loader.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/mapped_file.h"
#include "model/gguf.h"
#include "model/safetensors.h"

namespace flint {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::optional<std::string> read_text_if_exists(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(p, ec)) return std::nullopt;
  MappedFile f(p.string());
  return std::string(reinterpret_cast<const char*>(f.data()), f.size());
}

// tokenizer_config.json's "chat_template": a string, or (older repos) a list of
// {"name", "template"} of which "default" is the chat template.
std::string template_from_tokenizer_config(const std::string& text, const fs::path& file) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) fail(file.string(), ": not a JSON object");
  auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const json& entry : *it) {
      if (!entry.is_object()) continue;
      auto name = entry.find("name"), tmpl = entry.find("template");
      if (name != entry.end() && *name == "default" && tmpl != entry.end() && tmpl->is_string())
        return tmpl->get<std::string>();
    }
  }
  fail(file.string(), ": \"chat_template\" must be a string or a list holding a \"default\" template");
}

void check_tokenizer_fits(const LoadedModel& m) {
  if (m.tokenizer && m.tokenizer->vocab_size() > m.config.vocab_size)
    fail(m.path, ": the tokenizer has ", m.tokenizer->vocab_size(), " tokens, more than the model's vocab_size ",
         m.config.vocab_size);
}

// The GGUF's tokenizer (when it has tokenizer.ggml.* metadata) and chat template into m.
void read_gguf_tokenizer(const GgufFile& gguf, LoadedModel& m) {
  if (gguf.has("tokenizer.ggml.tokens")) m.tokenizer = Tokenizer::from_gguf(gguf);
  m.chat_template_source = gguf.get_string("tokenizer.chat_template").value_or("");
}

// A HF directory's tokenizer.json (when there is one) and chat template into m.
void read_hf_tokenizer(const fs::path& dir, LoadedModel& m) {
  std::optional<std::string> tok_config = read_text_if_exists(dir / "tokenizer_config.json");
  if (std::optional<std::string> tok_json = read_text_if_exists(dir / "tokenizer.json"))
    m.tokenizer = Tokenizer::from_hf_json(*tok_json, tok_config.value_or(""));
  if (std::optional<std::string> jinja = read_text_if_exists(dir / "chat_template.jinja"))
    m.chat_template_source = *jinja;
  else if (tok_config)
    m.chat_template_source = template_from_tokenizer_config(*tok_config, dir / "tokenizer_config.json");
}

LoadedModel load_gguf(const std::string& path) {
  LoadedModel m;
  m.path = path;
  auto gguf = std::make_unique<GgufFile>(path);
  m.config = config_from_gguf(*gguf);
  m.weights = bind_weights(*gguf, m.config, WeightNaming::Gguf);
  read_gguf_tokenizer(*gguf, m);
  m.source = std::move(gguf);
  check_tokenizer_fits(m);
  return m;
}

LoadedModel load_hf_dir(const std::string& path) {
  const fs::path dir(path);
  LoadedModel m;
  m.path = path;
  std::optional<std::string> config_json = read_text_if_exists(dir / "config.json");
  if (!config_json) fail(path, ": no config.json in the model directory");
  try {
    m.config = config_from_hf_json(*config_json);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  m.source = std::make_unique<SafetensorsSource>(path);
  m.weights = bind_weights(*m.source, m.config, WeightNaming::HuggingFace);
  read_hf_tokenizer(dir, m);
  check_tokenizer_fits(m);
  return m;
}

}  // namespace

LoadedModel load_model(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::is_directory(st)) return load_hf_dir(path);
  if (!fs::exists(st)) fail(path, ": no such file or directory");
  if (fs::is_regular_file(st) && path.ends_with(".gguf")) return load_gguf(path);
  fail(path, ": expected a .gguf file or a model directory (config.json + safetensors)");
}

void attach_tokenizer(LoadedModel& m, const std::string& tokenizer_path) {
  m.tokenizer.reset();
  m.chat_template_source.clear();
  std::error_code ec;
  const fs::file_status st = fs::status(tokenizer_path, ec);
  if (fs::is_directory(st)) {
    read_hf_tokenizer(tokenizer_path, m);
  } else if (fs::is_regular_file(st) && tokenizer_path.ends_with(".gguf")) {
    read_gguf_tokenizer(GgufFile(tokenizer_path), m);
  } else {
    fail(tokenizer_path, ": expected a .gguf file or a directory holding tokenizer.json");
  }
  if (!m.tokenizer) fail(tokenizer_path, ": no tokenizer (tokenizer.json or GGUF vocabulary) there");
  check_tokenizer_fits(m);
}

}  // namespace flint
