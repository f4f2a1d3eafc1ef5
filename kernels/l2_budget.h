// L2 budgets for the prefetch hints (FLINT_MATMUL_AHEAD, FLINT_ATTN_AHEAD, FLINT_L2_PREFETCH), as the environment
// gives them: unset, "off" or "0": none; "on": a share of the device's L2 (each variable says which); "N": N MiB
// (1 to 4096). No CUDA here: the CPU-side planning code reads them too.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

namespace flint {

// The budget `value` (may be null) names, "on" being on_bytes; nullopt when it is none of the forms above.
inline std::optional<int64_t> parse_l2_budget(const char* value, int64_t on_bytes) {
  const std::string v = value ? value : "";
  if (v.empty() || v == "off" || v == "0") return 0;
  if (v == "on") return on_bytes;
  char* end = nullptr;
  const long long mib = std::strtoll(v.c_str(), &end, 10);
  if (v[0] < '0' || v[0] > '9' || *end != '\0' || mib < 1 || mib > 4096) return std::nullopt;
  return int64_t(mib) << 20;
}

}  // namespace flint
