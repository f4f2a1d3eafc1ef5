// Tokenizer: byte-level BPE (GPT-2 byte mapping) with the pre-tokenizer rules of
// SmolLM2, Llama-3 and Qwen2, special/added tokens matched before BPE; and an
// incremental detokenizer that never emits part of a UTF-8 character.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flint {

class GgufFile;

enum class PreTokenizer {
  Gpt2,       // GPT-2 pattern only
  SmolLM,     // digits split one by one, then the GPT-2 pattern ("smollm" in GGUF)
  Llama3,     // Llama-3 pattern (digits in runs of up to 3)
  Qwen2,      // Qwen2 pattern (single digits)
};

class Tokenizer {
 public:
  // From GGUF metadata: tokenizer.ggml.{model,pre,tokens,merges,token_type,
  // bos_token_id,eos_token_id,add_bos_token,...}.
  static Tokenizer from_gguf(const GgufFile& gguf);
  // From the text of a HF tokenizer.json (model.type "BPE", byte-level), and
  // optionally tokenizer_config.json's text for bos/eos and add_bos.
  static Tokenizer from_hf_json(std::string_view tokenizer_json, std::string_view tokenizer_config_json = {});

  // parse_special: special (control) tokens written in the text become their ids;
  // added tokens that are not special (e.g. <think> in some vocabularies) always do.
  // Adds BOS first when the model asks for it and add_bos is true.
  // Throws flint::Error when `text` is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true, bool add_bos = true) const;
  // The bytes of `ids` concatenated; skip_special drops control tokens.
  // Throws flint::Error on an id out of range.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The raw bytes one token stands for (byte-level mapping undone).
  const std::string& token_bytes(int32_t id) const;
  // The token's string as stored in the vocabulary (e.g. "Ġthe", "<|im_end|>").
  const std::string& token_text(int32_t id) const;
  std::optional<int32_t> find_token(std::string_view text) const;  // by vocabulary string

  int32_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  bool add_bos() const;  // whether encode(..., add_bos=true) puts bos_id() first
  // End-of-generation ids, sorted: eos, GGUF eot/eom, and the special tokens
  // that end a turn (<|im_end|>, <|eot_id|>, <|endoftext|>, ...). Stop on any.
  std::span<const int32_t> eog_ids() const;
  bool is_eog(int32_t id) const;
  bool is_special(int32_t id) const;  // control / added-special tokens
  PreTokenizer pre_tokenizer() const;

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of token ids into text pieces as soon as they are whole UTF-8;
// the concatenation of every push() and the final flush() equals decode(all ids).
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  std::string flush();  // whatever bytes are held back (invalid UTF-8 at the end)

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace flint
