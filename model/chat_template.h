// ChatTemplate: renders a conversation into the prompt text a model family was
// trained on, and names that family's think markers and stop tokens.
#pragma once
#include <chrono>
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
  // Llama-3's "Today Date: ..." system line ("%d %b %Y"). The default is what the
  // template writes when it has no clock; ChatTemplate::date_string() formats a day.
  std::string date_string = "26 Jul 2024";
};

enum class TemplateKind { ChatML, Qwen3, Llama3, DeepSeekR1 };

class ChatTemplate {
 public:
  // Chooses by the model's own template string (GGUF tokenizer.chat_template or
  // tokenizer_config.json) and architecture; throws flint::Error when unknown.
  static ChatTemplate detect(std::string_view template_source, Arch arch);
  // "chatml", "qwen3", "llama3", "deepseek-r1"; throws listing the names when unknown.
  static ChatTemplate by_name(std::string_view name);

  // The prompt text, byte-identical to what the model's jinja template renders (via
  // transformers) for the same messages. It already starts with BOS where the template
  // writes one (Llama-3, DeepSeek): tokenize it with special tokens parsed and no BOS added.
  // Throws flint::Error on an empty conversation or a role other than system, user, assistant.
  std::string render(std::span<const ChatMessage> messages, const ChatOptions& options = {}) const;

  // True when the rendered prompt leaves a think block open (DeepSeek-R1 ends the
  // generation prompt with "<think>\n"): the first tokens generated are reasoning
  // although the model never writes think_start() itself.
  bool prompt_opens_think(const ChatOptions& options = {}) const;

  // "05 Mar 2025": a day in the format of ChatOptions::date_string.
  static std::string date_string(std::chrono::year_month_day day);

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
  // The BOS text render() writes itself, empty when the template writes none.
  const std::string& bos_token() const { return bos_; }

 private:
  TemplateKind kind_ = TemplateKind::ChatML;
  std::string think_start_, think_end_, default_system_prompt_;
  std::vector<std::string> stop_tokens_;
  std::string bos_;  // prepended by templates that write BOS themselves (Llama-3, DeepSeek)
  bool think_after_generation_prompt_ = false;  // DeepSeek-R1: "<｜Assistant｜><think>\n"
  friend struct ChatTemplateBuilder;
};

}  // namespace flint
