// PreTokenizerRegex: the SmolLM2 / GPT-2 / Llama-3 / Qwen2 split rules as PCRE2
// programs (JIT-compiled when PCRE2 can), matched the way HF's Split does.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "model/pretokenizer.h"

#include <pcre2.h>

#include <string>

#include "common/error.h"
#include "model/utf8.h"

namespace flint {
namespace {

// PCRE2 spellings of the patterns in pretokenizer.h. One difference to make up:
// Oniguruma's \s (what HF tokenizers uses) includes U+0085 (NEL), PCRE2's does not.
#define FLINT_WS R"(\s\x{85})"
constexpr const char* kGpt2Pcre =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^)" FLINT_WS R"(\p{L}\p{N}]+|[)" FLINT_WS
    R"(]+(?![^)" FLINT_WS R"(])|[)" FLINT_WS R"(]+)";
#define FLINT_LLAMA_LIKE(DIGITS)                                                                 \
  R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|)" DIGITS R"(| ?[^)" FLINT_WS        \
  R"(\p{L}\p{N}]+[\r\n]*|[)" FLINT_WS R"(]*[\r\n]+|[)" FLINT_WS R"(]+(?![^)" FLINT_WS R"(])|[)" \
  FLINT_WS R"(]+)"
constexpr const char* kLlama3Pcre = FLINT_LLAMA_LIKE(R"(\p{N}{1,3})");
constexpr const char* kQwen2Pcre = FLINT_LLAMA_LIKE(R"(\p{N})");
constexpr const char* kDigitPcre = R"(\p{N})";
#undef FLINT_LLAMA_LIKE
#undef FLINT_WS

std::vector<const char*> stage_patterns(PreTokenizer kind) {
  switch (kind) {
    case PreTokenizer::Gpt2: return {kGpt2Pcre};
    case PreTokenizer::SmolLM: return {kDigitPcre, kGpt2Pcre};  // digits isolated first
    case PreTokenizer::Llama3: return {kLlama3Pcre};
    case PreTokenizer::Qwen2: return {kQwen2Pcre};
  }
  fail("pre-tokenizer: unknown kind ", static_cast<int>(kind));
}

}  // namespace

struct PreTokenizerRegex::Stage {
  pcre2_code* code = nullptr;
  ~Stage() { pcre2_code_free(code); }
};

std::optional<PreTokenizer> pre_tokenizer_from_split_regex(std::string_view regex) {
  if (regex == kLlama3SplitRegex) return PreTokenizer::Llama3;
  if (regex == kQwen2SplitRegex) return PreTokenizer::Qwen2;
  return std::nullopt;
}

const char* pre_tokenizer_name(PreTokenizer kind) {
  switch (kind) {
    case PreTokenizer::Gpt2: return "gpt2";
    case PreTokenizer::SmolLM: return "smollm";
    case PreTokenizer::Llama3: return "llama3";
    case PreTokenizer::Qwen2: return "qwen2";
  }
  return "unknown";
}

PreTokenizerRegex::PreTokenizerRegex(PreTokenizer kind) {
  for (const char* pattern : stage_patterns(kind)) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    auto stage = std::make_unique<Stage>();
    stage->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (stage->code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      fail("pre-tokenizer ", pre_tokenizer_name(kind), ": PCRE2 rejects the pattern at offset ", offset,
           ": ", reinterpret_cast<const char*>(message));
    }
    // JIT is an optimisation only: the interpreter gives the same matches.
    pcre2_jit_compile(stage->code, PCRE2_JIT_COMPLETE);
    stages_.push_back(std::move(stage));
  }
}

PreTokenizerRegex::~PreTokenizerRegex() = default;
PreTokenizerRegex::PreTokenizerRegex(PreTokenizerRegex&&) noexcept = default;
PreTokenizerRegex& PreTokenizerRegex::operator=(PreTokenizerRegex&&) noexcept = default;

namespace {

// One regex over one piece: matches and the gaps between them become pieces.
void split_one(pcre2_code* code, pcre2_match_data* match, std::string_view text,
               std::vector<std::string_view>& out) {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t gap_start = 0;  // start of text not yet emitted
  size_t search = 0;     // where the next match may start
  while (search < text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), search, PCRE2_NO_UTF_CHECK, match, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      fail("pre-tokenizer: PCRE2 match failed: ", reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
    const size_t begin = ovector[0], end = ovector[1];
    if (end == begin) {  // an empty match splits nothing: step over one character
      const size_t n = utf8::sequence_length(static_cast<uint8_t>(text[begin]));
      search = begin + (n == 0 ? 1 : n);
      continue;
    }
    if (begin > gap_start) out.push_back(text.substr(gap_start, begin - gap_start));
    out.push_back(text.substr(begin, end - begin));
    gap_start = search = end;
  }
  if (gap_start < text.size()) out.push_back(text.substr(gap_start));
}

struct MatchData {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  ~MatchData() { pcre2_match_data_free(data); }
};

}  // namespace

void PreTokenizerRegex::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;
  MatchData match;  // per call: PCRE2 match data must not be shared between threads
  if (match.data == nullptr) fail("pre-tokenizer: out of memory for PCRE2 match data");
  std::vector<std::string_view> current{text}, next;
  for (size_t s = 0; s < stages_.size(); ++s) {
    std::vector<std::string_view>& out = s + 1 == stages_.size() ? pieces : next;
    for (std::string_view piece : current) split_one(stages_[s]->code, match.data, piece, out);
    if (&out == &next) {
      current.swap(next);
      next.clear();
    }
  }
}

}  // namespace flint
