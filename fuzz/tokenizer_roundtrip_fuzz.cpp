// Tokenizer round trips on the fixture tokenizers (and SmolLM2's when models/ has it).
// Byte 0 picks the tokenizer, byte 1 the mode:
//   text: valid UTF-8 must give decode(encode(s)) == s, with special tokens parsed or
//         not (where the vocabulary has a token for every byte of s), and the
//         incremental detokenizer must stream decode()'s text in whole characters;
//         invalid UTF-8 must be refused with flint::Error.
//   ids:  any in-vocabulary ids: the incremental detokenizer's pieces concatenate
//         to decode(ids), with special tokens kept or skipped.
#include <bitset>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "fuzz/fuzz_common.h"
#include "model/tokenizer.h"
#include "model/utf8.h"

namespace {

using flint::fuzz::invariant_failed;

std::string stream(const flint::Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special, bool whole_chars) {
  flint::IncrementalDetokenizer detok(tok, skip_special);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = detok.push(id);
    if (whole_chars && flint::utf8::first_invalid(piece))
      invariant_failed("incremental detokenizer emitted part of a UTF-8 character", piece);
    out += piece;
  }
  return out + detok.flush();
}

// Whether some token stands for the single byte `c` (computed once per tokenizer).
bool has_byte_token(const flint::Tokenizer& tok, unsigned char c) {
  static std::map<const flint::Tokenizer*, std::bitset<256>> cache;
  auto it = cache.find(&tok);
  if (it == cache.end()) {
    std::bitset<256> bytes;
    for (int32_t id = 0; id < tok.vocab_size(); ++id)
      if (!tok.is_special(id) && tok.token_bytes(id).size() == 1) bytes.set(uint8_t(tok.token_bytes(id)[0]));
    it = cache.emplace(&tok, bytes).first;
  }
  return it->second.test(c);
}

void text_mode(const flint::Tokenizer& tok, bool parse_special, std::string_view text) {
  const bool valid = !flint::utf8::first_invalid(text);
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text, parse_special, /*add_bos=*/false);
  } catch (const flint::Error&) {
    if (valid) throw;  // a valid text refused is a finding: let libFuzzer report it
    return;
  }
  if (!valid) invariant_failed("encode accepted invalid UTF-8");
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) invariant_failed("encode gave an id outside the vocabulary");
  const std::string decoded = tok.decode(ids);
  if (stream(tok, ids, false, /*whole_chars=*/!flint::utf8::first_invalid(decoded)) != decoded)
    invariant_failed("incremental detokenizer disagrees with decode()");
  // A byte the vocabulary has no token for is dropped, as HF and llama.cpp do
  // (SmolLM2 lacks 0x04, 0x06, 0x13, 0x14, 0x16, 0x1d): the round trip is only
  // promised for text made of bytes it has.
  for (unsigned char c : text)
    if (!has_byte_token(tok, c)) return;
  if (decoded != text) {
    std::string ids_text;
    for (int32_t id : ids) ids_text += std::to_string(id) + " ";
    invariant_failed("decode(encode(s)) != s",
                     "s:       " + flint::fuzz::escaped(text) + "\ndecoded: " + flint::fuzz::escaped(decoded) +
                         "\nids:     " + ids_text);
  }
}

void ids_mode(const flint::Tokenizer& tok, bool skip_special, const uint8_t* data, size_t size) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 4 <= size; i += 4) {
    uint32_t v;
    std::memcpy(&v, data + i, 4);
    ids.push_back(int32_t(v % uint32_t(tok.vocab_size())));
  }
  const std::string all = tok.decode(ids, skip_special);
  // Whole characters are only promised where the ids' bytes form valid UTF-8.
  const bool valid = !flint::utf8::first_invalid(all);
  if (stream(tok, ids, skip_special, valid) != all)
    invariant_failed("incremental detokenizer's pieces != decode(ids)");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const auto& toks = flint::fuzz::tokenizers();
  const flint::Tokenizer& tok = *toks[data[0] % toks.size()];
  const uint8_t mode = data[1];
  data += 2;
  size -= 2;
  if (mode & 1)
    ids_mode(tok, mode & 2, data, size);
  else
    text_mode(tok, mode & 2, std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
