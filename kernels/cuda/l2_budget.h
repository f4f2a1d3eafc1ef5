// The prefetch hints' L2 budgets read from the environment on the CUDA side (FLINT_MATMUL_AHEAD,
// FLINT_ATTN_AHEAD), in kernels/l2_budget.h's forms. Host code.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "kernels/l2_budget.h"

namespace flint::cuda {

// L2 of the device current now (0 when it cannot be read).
inline int64_t current_device_l2_bytes() {
  int dev = 0, l2 = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev) != cudaSuccess)
    return 0;
  return l2;
}

// An environment variable's budget, read once by the caller (a function-local static): "on" is half of the L2 of
// the device current at that first read. valid false (bytes 0) for a malformed value, which `value` keeps for the
// caller's message.
struct EnvL2Budget {
  bool valid = true;
  int64_t bytes = 0;
  std::string value;
  // What a call refused for a malformed value says.
  std::string why(const char* name) const {
    return std::string(name) + "=" + value + ": expected 'off' (the default), 'on' or MiB (1..4096)";
  }
};
inline EnvL2Budget env_l2_budget(const char* name) {
  EnvL2Budget b;
  const char* v = std::getenv(name);
  b.value = v ? v : "";
  const std::optional<int64_t> bytes = parse_l2_budget(v, b.value == "on" ? current_device_l2_bytes() / 2 : 0);
  b.valid = bytes.has_value();
  b.bytes = bytes.value_or(0);
  return b;
}

}  // namespace flint::cuda
