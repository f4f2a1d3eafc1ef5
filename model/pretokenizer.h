// Pre-tokenization: splits text into the pieces that BPE runs on, with PCRE2
// regexes (UTF + UCP) applied in stages, each splitting the pieces of the last.
#pragma once
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "model/tokenizer.h"

namespace flint {

// The Split regexes as HF tokenizer.json files write them (Oniguruma syntax).
inline constexpr std::string_view kGpt2SplitRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kDigitSplitRegex = R"(\p{N})";

// The pre-tokenizer a tokenizer.json Split regex stands for (Llama3 or Qwen2), if known.
std::optional<PreTokenizer> pre_tokenizer_from_split_regex(std::string_view regex);
const char* pre_tokenizer_name(PreTokenizer kind);

class PreTokenizerRegex {
 public:
  explicit PreTokenizerRegex(PreTokenizer kind);  // throws flint::Error if PCRE2 refuses a pattern
  ~PreTokenizerRegex();
  PreTokenizerRegex(PreTokenizerRegex&&) noexcept;
  PreTokenizerRegex& operator=(PreTokenizerRegex&&) noexcept;

  // PRECOND: `text` is valid UTF-8. Appends to `pieces` views into `text`, in
  // order, none empty, that concatenate to `text` (HF Split, "Isolated").
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

 private:
  struct Stage;
  std::vector<std::unique_ptr<Stage>> stages_;
};

}  // namespace flint
