// DType: the element types a weight may have, with their block layouts.
// Quantized types store `block_size` values in `block_bytes` bytes (ggml's layouts).
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace flint {

enum class DType : uint8_t { F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K };

struct DTypeInfo {
  std::string_view name;
  int block_size;   // values per block (1 for plain types)
  int block_bytes;  // bytes per block
};

constexpr DTypeInfo dtype_info(DType t) {
  switch (t) {
    case DType::F32: return {"F32", 1, 4};
    case DType::F16: return {"F16", 1, 2};
    case DType::BF16: return {"BF16", 1, 2};
    case DType::Q8_0: return {"Q8_0", 32, 34};
    case DType::Q4_0: return {"Q4_0", 32, 18};
    case DType::Q4_1: return {"Q4_1", 32, 20};
    case DType::Q4_K: return {"Q4_K", 256, 144};
    case DType::Q6_K: return {"Q6_K", 256, 210};
  }
  return {"?", 1, 1};
}

// Bytes that n values of type t take, or nullopt when n is not a whole number
// of blocks or the product overflows.
inline std::optional<uint64_t> dtype_bytes(DType t, uint64_t n) {
  DTypeInfo info = dtype_info(t);
  if (n % static_cast<uint64_t>(info.block_size) != 0) return std::nullopt;
  uint64_t blocks = n / static_cast<uint64_t>(info.block_size), r;
  if (__builtin_mul_overflow(blocks, static_cast<uint64_t>(info.block_bytes), &r)) return std::nullopt;
  return r;
}

}  // namespace flint
