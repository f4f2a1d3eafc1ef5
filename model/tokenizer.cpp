// Tokenizer tables (built and checked from a VocabSpec), the GPT-2 byte mapping,
// decode, and the incremental detokenizer. Encoding is in tokenizer_encode.cpp.
#include "model/tokenizer.h"

#include <algorithm>

#include "common/error.h"
#include "model/tokenizer_impl.h"
#include "model/utf8.h"

namespace flint {

// ---- GPT-2 byte mapping: printable Latin-1 bytes stand for themselves, the
// other 68 take the code points 256, 257, ... in byte order.
namespace {

constexpr bool prints_as_itself(unsigned b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct ByteMap {
  std::array<char32_t, 256> to_cp{};
  std::array<int16_t, 256 + 68> to_byte{};  // code point -> byte, -1 where none
  ByteMap() {
    to_byte.fill(-1);
    char32_t next = 256;
    for (unsigned b = 0; b < 256; ++b) {
      to_cp[b] = prints_as_itself(b) ? char32_t(b) : next++;
      to_byte[to_cp[b]] = int16_t(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;  // immutable after construction
  return map;
}

// The end-of-turn markers of the model families Flint serves (as llama.cpp lists them).
constexpr std::string_view kEndOfGenerationTexts[] = {
    "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<|end_of_text|>",
    "<end_of_turn>", "<EOT>", "<｜end▁of▁sentence｜>",
};

}  // namespace

char32_t byte_to_code_point(uint8_t byte) { return byte_map().to_cp[byte]; }

std::optional<uint8_t> code_point_to_byte(char32_t cp) {
  if (cp >= byte_map().to_byte.size() || byte_map().to_byte[cp] < 0) return std::nullopt;
  return uint8_t(byte_map().to_byte[cp]);
}

std::string byte_level_spelling(std::string_view raw) {
  std::string out;
  out.reserve(raw.size() * 2);
  for (char c : raw) utf8::append(out, byte_to_code_point(uint8_t(c)));
  return out;
}

namespace {

// The bytes a Normal token stands for; a spelling with characters outside the
// byte alphabet is taken as its own UTF-8 bytes (as HF's ByteLevel decoder does).
std::string bytes_of_spelling(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const size_t n = utf8::valid_char_length(text.substr(i));
    const auto byte = n == 0 ? std::nullopt : code_point_to_byte(utf8::decode(text.substr(i)));
    if (!byte) return std::string(text);
    out.push_back(char(*byte));
    i += n;
  }
  return out;
}

}  // namespace

// ---- Impl: checks and tables.
Tokenizer::Impl::Impl(VocabSpec spec)
    : source(std::move(spec.source)),
      pre(spec.pre),
      regex(spec.pre),
      tokens(std::move(spec.tokens)),
      ignore_merges(spec.ignore_merges),
      fuse_unk(spec.fuse_unk),
      bos(spec.bos),
      eos(spec.eos),
      unk(spec.unk),
      add_bos(spec.add_bos) {
  if (tokens.empty()) fail(source, ": the vocabulary is empty");
  if (tokens.size() > size_t(INT32_MAX)) fail(source, ": ", tokens.size(), " tokens is more than ids can count");
  const auto n = int32_t(tokens.size());
  const auto check_id = [&](const std::optional<int32_t>& id, const char* what) {
    if (id && (*id < 0 || *id >= n))
      fail(source, ": ", what, " token id ", *id, " is out of range (the vocabulary has ", n, " tokens)");
  };
  check_id(bos, "bos");
  check_id(eos, "eos");
  check_id(unk, "unknown");
  if (add_bos && !bos) fail(source, ": asks to add a BOS token but names none");

  bytes.reserve(tokens.size());
  index.reserve(tokens.size());
  for (int32_t id = 0; id < n; ++id) {
    const TokenSpec& t = tokens[id];
    const bool spelled = t.kind == TokenKind::Normal || t.kind == TokenKind::Unused;
    bytes.push_back(spelled ? bytes_of_spelling(t.text) : t.text);
    index[t.text] = id;  // a repeated spelling resolves to its last id (as llama.cpp)
  }

  for (unsigned b = 0; b < 256; ++b) {
    std::string spelling;
    utf8::append(spelling, byte_to_code_point(uint8_t(b)));
    auto it = index.find(spelling);
    byte_token[b] = it == index.end() ? -1 : it->second;
  }

  merges.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    // Not a structured binding: clang before 16 cannot capture one in the lambda below.
    const std::string& left = spec.merges[rank].first;
    const std::string& right = spec.merges[rank].second;
    const auto find = [&](const std::string& text) {
      auto it = index.find(text);
      if (it == index.end())
        fail(source, ": merge ", rank, " (\"", left, "\" \"", right, "\") names \"", text,
             "\", which is not in the vocabulary");
      return it->second;
    };
    const int32_t l = find(left), r = find(right), merged = find(left + right);
    const uint64_t key = uint64_t(uint32_t(l)) << 32 | uint32_t(r);
    merges.emplace(key, Merge{uint32_t(rank), merged});  // a repeated pair keeps its first rank
  }

  trie.emplace_back();
  for (int32_t id = 0; id < n; ++id) {
    const TokenSpec& t = tokens[id];
    if ((t.kind != TokenKind::Control && t.kind != TokenKind::UserDefined) || t.text.empty()) continue;
    int32_t node = 0;
    for (char c : t.text) {
      auto& children = trie[node].children;
      auto it = std::find_if(children.begin(), children.end(), [&](auto& e) { return e.first == uint8_t(c); });
      if (it != children.end()) {
        node = it->second;
      } else {
        children.emplace_back(uint8_t(c), int32_t(trie.size()));
        node = int32_t(trie.size());
        trie.emplace_back();  // invalidates `children`: not used after this
      }
    }
    trie[node].token = id;
    trie_first[uint8_t(t.text[0])] = true;
  }

  if (eos) eog.push_back(*eos);
  for (int32_t id : spec.extra_eog) {
    check_id(id, "end-of-generation");
    eog.push_back(id);
  }
  for (std::string_view text : kEndOfGenerationTexts) {
    auto it = index.find(text);
    if (it != index.end() && tokens[it->second].kind != TokenKind::Normal) eog.push_back(it->second);
  }
  std::sort(eog.begin(), eog.end());
  eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
}

const TokenSpec& Tokenizer::Impl::token(int32_t id) const {
  if (id < 0 || size_t(id) >= tokens.size())
    fail("token id ", id, " is out of range (the vocabulary has ", tokens.size(), " tokens)");
  return tokens[id];
}

// ---- Tokenizer: queries and decode.
Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    out += token_bytes(id);
  }
  return out;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  impl_->token(id);
  return impl_->bytes[id];
}

const std::string& Tokenizer::token_text(int32_t id) const { return impl_->token(id).text; }

std::optional<int32_t> Tokenizer::find_token(std::string_view text) const {
  auto it = impl_->index.find(text);
  if (it == impl_->index.end()) return std::nullopt;
  return it->second;
}

int32_t Tokenizer::vocab_size() const { return int32_t(impl_->tokens.size()); }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
std::span<const int32_t> Tokenizer::eog_ids() const { return impl_->eog; }
bool Tokenizer::is_eog(int32_t id) const { return std::binary_search(impl_->eog.begin(), impl_->eog.end(), id); }
bool Tokenizer::is_special(int32_t id) const { return impl_->token(id).kind == TokenKind::Control; }
PreTokenizer Tokenizer::pre_tokenizer() const { return impl_->pre; }

// ---- IncrementalDetokenizer: holds back only the bytes of a character that is
// still incomplete; anything that can never become valid UTF-8 goes out at once.
IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  if (!(skip_special_ && tokenizer_.is_special(id))) pending_ += tokenizer_.token_bytes(id);
  const size_t keep = utf8::incomplete_tail(pending_);
  std::string out = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string IncrementalDetokenizer::flush() { return std::exchange(pending_, std::string()); }

}  // namespace flint
