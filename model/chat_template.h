// ChatTemplate: renders a conversation into the prompt text a model family was
// trained on, and names that family's think markers and stop tokens.
#pragma once
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"

namespace flint {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

struct ChatOptions {
  bool add_generation_prompt = true;
  bool enable_thinking = true;  // Qwen3: false renders an empty think block
};

enum class TemplateKind { ChatML, Qwen3, Llama3, DeepSeekR1 };

class ChatTemplate {
 public:
  // Chooses by the model's own template string (GGUF tokenizer.chat_template or
  // tokenizer_config.json) and architecture; throws flint::Error when unknown.
  static ChatTemplate detect(std::string_view template_source, Arch arch);
  // "chatml", "qwen3", "llama3", "deepseek-r1"; throws listing the names when unknown.
  static ChatTemplate by_name(std::string_view name);

  std::string render(std::span<const ChatMessage> messages, const ChatOptions& options = {}) const;

  TemplateKind kind() const { return kind_; }
  std::string_view name() const;
  // The model's reasoning markers, empty when it has none (SmolLM2).
  const std::string& think_start() const { return think_start_; }
  const std::string& think_end() const { return think_end_; }
  // Token strings that end an assistant turn (e.g. "<|im_end|>", "<|eot_id|>").
  const std::vector<std::string>& stop_tokens() const { return stop_tokens_; }
  // Used when the conversation has no system message; empty when none
  // (SmolLM2's "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
  const std::string& default_system_prompt() const { return default_system_prompt_; }

 private:
  TemplateKind kind_ = TemplateKind::ChatML;
  std::string think_start_, think_end_, default_system_prompt_;
  std::vector<std::string> stop_tokens_;
  std::string bos_;  // prepended by templates that write BOS themselves (Llama-3, DeepSeek)
  friend struct ChatTemplateBuilder;
};

}  // namespace flint
