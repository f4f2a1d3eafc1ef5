// UTF-8 helpers for the tokenizer: strict validation (no overlongs, surrogates
// or code points past U+10FFFF), the held-back tail of a stream, code points.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace flint::utf8 {

// Length of the sequence `lead` starts (1..4), or 0 when it cannot start one.
inline size_t sequence_length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Whether `byte` may stand at position `index` (1..3) of a sequence led by `lead`.
inline bool continuation_ok(uint8_t lead, size_t index, uint8_t byte) {
  if (index == 1) {
    if (lead == 0xE0) return byte >= 0xA0 && byte <= 0xBF;  // no overlongs
    if (lead == 0xED) return byte >= 0x80 && byte <= 0x9F;  // no surrogates
    if (lead == 0xF0) return byte >= 0x90 && byte <= 0xBF;  // no overlongs
    if (lead == 0xF4) return byte >= 0x80 && byte <= 0x8F;  // <= U+10FFFF
  }
  return (byte & 0xC0) == 0x80;
}

// Length of the whole, valid character at the start of `s`, or 0 when `s` does
// not start with one (invalid or cut short).
inline size_t valid_char_length(std::string_view s) {
  if (s.empty()) return 0;
  const auto lead = static_cast<uint8_t>(s[0]);
  const size_t n = sequence_length(lead);
  if (n == 0 || n > s.size()) return 0;
  for (size_t i = 1; i < n; ++i)
    if (!continuation_ok(lead, i, static_cast<uint8_t>(s[i]))) return 0;
  return n;
}

// Byte offset of the first invalid or truncated sequence, nullopt when valid.
inline std::optional<size_t> first_invalid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = valid_char_length(s.substr(i));
    if (n == 0) return i;
    i += n;
  }
  return std::nullopt;
}

// How many bytes at the end of `s` are an incomplete character that later bytes
// could still complete (0..3). Bytes that can never become valid are not counted.
inline size_t incomplete_tail(std::string_view s) {
  const size_t max_back = s.size() < 3 ? s.size() : 3;
  for (size_t back = 1; back <= max_back; ++back) {
    const auto lead = static_cast<uint8_t>(s[s.size() - back]);
    if ((lead & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t n = sequence_length(lead);
    if (n <= back) return 0;  // complete, or not a lead byte at all
    for (size_t i = 1; i < back; ++i)
      if (!continuation_ok(lead, i, static_cast<uint8_t>(s[s.size() - back + i]))) return 0;
    return back;
  }
  return 0;
}

// Decodes the valid character at the start of `s` (PRECOND: valid_char_length(s) > 0).
inline char32_t decode(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<char32_t>(static_cast<uint8_t>(s[i])); };
  switch (sequence_length(static_cast<uint8_t>(s[0]))) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

// Appends the UTF-8 form of `cp` (PRECOND: a scalar value).
template <class String>
void append(String& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Unicode White_Space (what HF's lstrip/rstrip of added tokens strips).
inline bool is_white_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

}  // namespace flint::utf8
