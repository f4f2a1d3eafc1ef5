// Tokenizer::Impl and VocabSpec: what the readers (tokenizer_load.cpp) hand over
// and the tables that encode/decode (tokenizer.cpp) run on. Private to model/.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/pretokenizer.h"
#include "model/tokenizer.h"

namespace flint {

enum class TokenKind : uint8_t {
  Normal,       // a BPE token: its text is the byte-level spelling of its bytes
  Control,      // special (GGUF CONTROL/UNKNOWN, HF added with special=true): matched in text
                // only when parse_special, dropped by decode(skip_special)
  UserDefined,  // added, not special (GGUF USER_DEFINED, HF special=false): always matched
  Unused,       // never produced by encode; decodes like Normal
};

struct TokenSpec {
  std::string text;  // as the file stores it
  TokenKind kind = TokenKind::Normal;
  bool lstrip = false;  // HF added tokens: the match swallows white space before it
  bool rstrip = false;  // ... and after it
};

// A tokenizer as read from a file, before checks and tables.
struct VocabSpec {
  std::string source;  // "GGUF file.gguf" or "tokenizer.json", for messages
  std::vector<TokenSpec> tokens;                           // index = id
  std::vector<std::pair<std::string, std::string>> merges;  // index = rank
  PreTokenizer pre = PreTokenizer::Gpt2;
  bool ignore_merges = false;  // a piece that is a whole vocabulary token skips BPE
  std::optional<int32_t> bos, eos;
  std::optional<int32_t> unk;  // stands for a byte with no token; none: such bytes are dropped
  bool fuse_unk = false;       // consecutive unknown bytes become one unk (HF fuse_unk)
  bool add_bos = false;
  std::vector<int32_t> extra_eog;  // end-of-generation ids besides eos (GGUF eot/eom)
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenIndex = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct Tokenizer::Impl {
  // Checks `spec` (ids, merges, special ids) and builds the tables; throws flint::Error.
  explicit Impl(VocabSpec spec);

  struct Merge {
    uint32_t rank;
    int32_t result;
  };
  // Added tokens as a byte trie, for leftmost-longest matching in text.
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> children;  // byte -> node index
    int32_t token = -1;
  };

  std::string source;
  PreTokenizer pre;
  PreTokenizerRegex regex;
  std::vector<TokenSpec> tokens;
  std::vector<std::string> bytes;  // id -> the raw bytes it decodes to
  TokenIndex index;                // text -> id
  std::unordered_map<uint64_t, Merge> merges;  // (left << 32 | right) -> rank, merged id
  std::array<int32_t, 256> byte_token;        // byte -> its single-byte token, -1 if none
  std::vector<TrieNode> trie;                  // trie[0] is the root
  std::array<bool, 256> trie_first{};          // bytes that start an added token
  bool ignore_merges;
  bool fuse_unk;
  std::optional<int32_t> bos, eos, unk;
  bool add_bos;
  std::vector<int32_t> eog;  // sorted, unique

  const TokenSpec& token(int32_t id) const;  // throws flint::Error when out of range
};

// GPT-2's reversible byte <-> printable code point mapping.
char32_t byte_to_code_point(uint8_t byte);
std::optional<uint8_t> code_point_to_byte(char32_t cp);
std::string byte_level_spelling(std::string_view raw);  // bytes -> vocabulary spelling

}  // namespace flint
