// Tokenizer::encode: added tokens matched in the text (leftmost, then longest),
// the pre-tokenizer on the text between them, then byte-level BPE by merge rank.
#include <queue>

#include "common/error.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"
#include "model/utf8.h"

namespace flint {
namespace {

// Buffers reused across the pieces of one encode() call.
struct Scratch {
  struct Symbol {
    int32_t id;
    int32_t prev;  // index of the previous live symbol, -1 at the start
    int32_t next;  // index of the next live symbol, -1 at the end
  };
  struct Candidate {
    uint32_t rank;
    int32_t pos;  // index of the left symbol
    int32_t left, right;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Symbol> symbols;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  std::vector<std::string_view> pieces;
  std::string spelling;
};

// Byte-level BPE on one piece: start from one symbol per byte, then merge the
// adjacent pair of lowest rank (leftmost on ties) until no pair has a merge.
void bpe(const Tokenizer::Impl& t, std::string_view piece, Scratch& s, std::vector<int32_t>& out) {
  if (t.ignore_merges) {
    s.spelling.clear();
    for (char c : piece) utf8::append(s.spelling, byte_to_code_point(uint8_t(c)));
    auto it = t.index.find(s.spelling);
    if (it != t.index.end()) {
      out.push_back(it->second);
      return;
    }
  }
  auto& sym = s.symbols;
  sym.clear();
  bool last_unknown = false;
  for (char c : piece) {
    int32_t id = t.byte_token[uint8_t(c)];
    const bool unknown = id < 0;
    if (unknown) {
      if (!t.unk) continue;  // no token for this byte and no unknown token: dropped (as HF and llama.cpp)
      if (t.fuse_unk && last_unknown) continue;
      id = *t.unk;
    }
    last_unknown = unknown;
    const auto i = int32_t(sym.size());
    sym.push_back({id, i - 1, -1});
    if (i > 0) sym[i - 1].next = i;
  }
  if (sym.empty()) return;

  const auto consider = [&](int32_t left) {
    const int32_t right = sym[left].next;
    if (right < 0) return;
    auto it = t.merges.find(uint64_t(uint32_t(sym[left].id)) << 32 | uint32_t(sym[right].id));
    if (it != t.merges.end()) s.queue.push({it->second.rank, left, sym[left].id, sym[right].id});
  };
  for (int32_t i = 0; i + 1 < int32_t(sym.size()); ++i) consider(i);
  while (!s.queue.empty()) {
    const Scratch::Candidate c = s.queue.top();
    s.queue.pop();
    // Stale when either side changed since it was queued (a removed symbol's id is -1).
    const int32_t right = sym[c.pos].next;
    if (sym[c.pos].id != c.left || right < 0 || sym[right].id != c.right) continue;
    sym[c.pos].id = t.merges.at(uint64_t(uint32_t(c.left)) << 32 | uint32_t(c.right)).result;
    sym[c.pos].next = sym[right].next;
    if (sym[right].next >= 0) sym[sym[right].next].prev = c.pos;
    sym[right].id = -1;
    if (sym[c.pos].prev >= 0) consider(sym[c.pos].prev);
    consider(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

void encode_ordinary(const Tokenizer::Impl& t, std::string_view text, Scratch& s, std::vector<int32_t>& out) {
  s.pieces.clear();
  t.regex.split(text, s.pieces);
  for (std::string_view piece : s.pieces) bpe(t, piece, s, out);
}

struct AddedMatch {
  size_t begin, end;  // the bytes the token replaces (with any stripped white space)
  int32_t id;
};

// The leftmost added token in text[from..], the longest one there; nullopt if none.
std::optional<AddedMatch> find_added(const Tokenizer::Impl& t, std::string_view text, size_t from,
                                     bool parse_special) {
  for (size_t i = from; i < text.size(); ++i) {
    if (!t.trie_first[uint8_t(text[i])]) continue;
    int32_t node = 0, best = -1;
    size_t best_end = 0;
    for (size_t j = i; j < text.size(); ++j) {
      const auto& children = t.trie[node].children;
      node = -1;
      for (const auto& [byte, child] : children)
        if (byte == uint8_t(text[j])) node = child;
      if (node < 0) break;
      const int32_t id = t.trie[node].token;
      if (id >= 0 && (parse_special || t.tokens[id].kind != TokenKind::Control)) {
        best = id;
        best_end = j + 1;
      }
    }
    if (best >= 0) return AddedMatch{i, best_end, best};
  }
  return std::nullopt;
}

// Widens a match over the white space its token strips (HF lstrip / rstrip).
void strip_around(const TokenSpec& token, std::string_view text, size_t from, AddedMatch& m) {
  if (token.lstrip) {
    while (m.begin > from) {
      size_t start = m.begin - 1;  // back up to the lead byte of the previous character
      while (start > from && (uint8_t(text[start]) & 0xC0) == 0x80) --start;
      if (!utf8::is_white_space(utf8::decode(text.substr(start)))) break;
      m.begin = start;
    }
  }
  if (token.rstrip) {
    while (m.end < text.size()) {
      const size_t n = utf8::valid_char_length(text.substr(m.end));
      if (!utf8::is_white_space(utf8::decode(text.substr(m.end)))) break;
      m.end += n;
    }
  }
}

}  // namespace

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special, bool add_bos) const {
  const Impl& t = *impl_;
  if (auto bad = utf8::first_invalid(text))
    fail("encode: the text is not valid UTF-8 (at byte ", *bad, " of ", text.size(), ")");
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && t.add_bos) out.push_back(*t.bos);
  Scratch scratch;
  size_t pos = 0;
  while (pos < text.size()) {
    std::optional<AddedMatch> m = find_added(t, text, pos, parse_special);
    if (!m) break;
    strip_around(t.tokens[m->id], text, pos, *m);
    encode_ordinary(t, text.substr(pos, m->begin - pos), scratch, out);
    out.push_back(m->id);
    pos = m->end;
  }
  encode_ordinary(t, text.substr(pos), scratch, out);
  return out;
}

}  // namespace flint
