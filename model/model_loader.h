// load_model: a model from a path (a .gguf file, or a HF directory of config.json,
// safetensors and tokenizer files) as config, weights, tokenizer and chat template.
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "model/config.h"
#include "model/model_weights.h"
#include "model/tokenizer.h"
#include "model/weights.h"

namespace flint {

struct LoadedModel {
  std::string path;
  ModelConfig config;  // validated; config.arch picks the chat template family
  // Heap-owned so that `weights`' pointers stay valid when LoadedModel moves.
  std::unique_ptr<WeightSource> source;
  ModelWeights weights;
  // Absent for a directory without tokenizer.json (the tiny test models); a GGUF
  // always has one unless it carries no tokenizer.ggml.* metadata.
  std::optional<Tokenizer> tokenizer;
  // The model's own Jinja chat template (GGUF tokenizer.chat_template, or HF
  // chat_template.jinja / tokenizer_config.json "chat_template"); empty when none.
  // Pass it with config.arch to ChatTemplate::detect.
  std::string chat_template_source;
};

// `path` is a .gguf file or a directory holding config.json and model.safetensors
// (or model.safetensors.index.json and its shards), optionally tokenizer.json,
// tokenizer_config.json and chat_template.jinja. Throws flint::Error naming the
// file and what is wrong.
LoadedModel load_model(const std::string& path);

// Sets m's tokenizer and chat template source from `tokenizer_path` (a .gguf file, or a directory holding
// tokenizer.json and optionally tokenizer_config.json / chat_template.jinja), for a model that came without
// one (a random-weight model). Throws flint::Error when there is no tokenizer there or it has more tokens
// than m's vocab_size.
void attach_tokenizer(LoadedModel& m, const std::string& tokenizer_path);

}  // namespace flint
