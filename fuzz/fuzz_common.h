// Shared by the fuzz targets: fixture files, the tokenizers and served model built
// once per process, and the abort that reports a broken invariant.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "model/chat_template.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

namespace flint::fuzz {

// A broken invariant is a finding: print it and abort so libFuzzer keeps the input.
[[noreturn]] inline void invariant_failed(std::string_view what, std::string_view detail = {}) {
  std::fprintf(stderr, "flint fuzz: invariant failed: %.*s\n%.*s\n", int(what.size()), what.data(),
               int(detail.size()), detail.data());
  std::abort();
}

// `s` with bytes outside printable ASCII as \xNN, for invariant messages.
inline std::string escaped(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(char(c));
    } else {
      char hex[5];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

// tests/data (FLINT_TEST_DATA_DIR, set by fuzz/CMakeLists.txt), or $FLINT_TEST_DATA_DIR.
inline std::filesystem::path data_dir() {
  if (const char* env = std::getenv("FLINT_TEST_DATA_DIR")) return env;
  return FLINT_TEST_DATA_DIR;
}

// A fixture's bytes; aborts when missing (a fuzz target without its fixture tests nothing).
inline std::string read_fixture(const std::string& rel) {
  const std::filesystem::path path = data_dir() / rel;
  std::ifstream in(path, std::ios::binary);
  if (!in) invariant_failed("fixture missing", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The fixture tokenizers (Llama-3 and Qwen2 pre-tokenizers, the tiny models'
// vocabularies), and SmolLM2's from the default model's GGUF when models/ has it.
// An input picks one by index, so keep the order.
inline const std::vector<std::unique_ptr<Tokenizer>>& tokenizers() {
  static const std::vector<std::unique_ptr<Tokenizer>> all = [] {
    std::vector<std::unique_ptr<Tokenizer>> v;
    auto hf = [&](const std::string& json, const std::string& config) {
      v.push_back(std::make_unique<Tokenizer>(Tokenizer::from_hf_json(read_fixture(json), read_fixture(config))));
    };
    hf("tokenizer/llama3.tokenizer.json", "tokenizer/llama3.tokenizer_config.json");
    hf("tokenizer/qwen2.tokenizer.json", "tokenizer/qwen2.tokenizer_config.json");
    hf("tiny-llama/tokenizer.json", "tiny-llama/tokenizer_config.json");
    hf("tiny-qwen2/tokenizer.json", "tiny-qwen2/tokenizer_config.json");
    const std::filesystem::path smollm2 = std::filesystem::path(FLINT_MODELS_DIR) / "SmolLM2-135M-Instruct.Q4_1.gguf";
    if (std::filesystem::exists(smollm2))
      v.push_back(std::make_unique<Tokenizer>(Tokenizer::from_gguf(GgufFile(smollm2.string()))));
    return v;
  }();
  return all;
}

}  // namespace flint::fuzz
