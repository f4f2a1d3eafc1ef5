// Overflow-safe size arithmetic for parsers of untrusted files.
#pragma once
#include <cstdint>
#include <optional>

namespace flint {

// Returns a + b, or nullopt when it does not fit in uint64_t.
inline std::optional<uint64_t> checked_add(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// Returns a * b, or nullopt when it does not fit in uint64_t.
inline std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// Rounds x up to a multiple of align (a power of two or not), or nullopt on overflow.
inline std::optional<uint64_t> checked_align_up(uint64_t x, uint64_t align) {
  if (align == 0) return std::nullopt;
  uint64_t rem = x % align;
  if (rem == 0) return x;
  return checked_add(x, align - rem);
}

}  // namespace flint
