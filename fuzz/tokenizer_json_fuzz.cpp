// tokenizer.json (and tokenizer_config.json) text -> Tokenizer::from_hf_json; a
// tokenizer that loads must encode and decode a sample text back to itself.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.h"
#include "fuzz/fuzz_common.h"
#include "model/tokenizer.h"
#include "model/utf8.h"

#include <nlohmann/json.hpp>

namespace {

void exercise(const flint::Tokenizer& tok) {
  constexpr std::string_view kSample = "Hello, world! 123 <think> caf\xC3\xA9\n";
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(kSample, /*parse_special=*/true, /*add_bos=*/false);
  } catch (const flint::Error&) {
    return;  // a vocabulary may lack bytes the sample needs
  }
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) flint::fuzz::invariant_failed("encode gave an id outside the vocabulary");
  if (tok.decode(ids) != kSample) flint::fuzz::invariant_failed("decode(encode(sample)) != sample");
}

// A byte-level BPE tokenizer.json with the 256 byte tokens (GPT-2's byte-to-unicode
// map), one merge and two added tokens: cheap to load on every input, unlike the
// fixtures, and enough for tokenizer_config.json to name bos/eos tokens in.
std::string minimal_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  int next_unprintable = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const char32_t cp = printable ? char32_t(b) : char32_t(next_unprintable++);
    std::string spelling;
    flint::utf8::append(spelling, cp);
    vocab[spelling] = b;
  }
  vocab["he"] = 256;
  const nlohmann::json added = nlohmann::json::array(
      {{{"id", 257}, {"content", "<s>"}, {"special", true}}, {{"id", 258}, {"content", "</s>"}, {"special", true}}});
  const nlohmann::json root = {{"added_tokens", added},
                               {"pre_tokenizer", {{"type", "ByteLevel"}, {"use_regex", true}}},
                               {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"h e"}}}}};
  return root.dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    exercise(flint::Tokenizer::from_hf_json(text));
  } catch (const flint::Error&) {
  }
  // The same bytes as tokenizer_config.json beside a small valid tokenizer.json
  // (configs are small; larger inputs are only tried as tokenizer.json).
  if (size < 4096) {
    static const std::string minimal = minimal_tokenizer_json();
    try {
      exercise(flint::Tokenizer::from_hf_json(minimal, text));
    } catch (const flint::Error&) {
    }
  }
  return 0;
}
