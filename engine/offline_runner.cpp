#include "engine/offline_runner.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"

namespace flint {

OfflineRunner::OfflineRunner(Backend& backend, int32_t prefill_chunk)
    : backend_(backend), prefill_chunk_(std::max(1, prefill_chunk)),
      logits_(size_t(backend.config().vocab_size)) {}

const std::vector<float>& OfflineRunner::feed(std::span<const int32_t> tokens) {
  if (tokens.empty()) fail("offline runner: nothing to feed");
  if (int64_t(length_) + int64_t(tokens.size()) > capacity())
    fail("sequence of ", length_ + int64_t(tokens.size()), " tokens exceeds the KV cache (", capacity(), " tokens)");
  const int32_t bs = backend_.block_size();
  for (size_t done = 0; done < tokens.size();) {
    const size_t n = std::min(tokens.size() - done, size_t(prefill_chunk_));
    const int32_t kv_len = length_ + int32_t(n);
    std::vector<int32_t> blocks(static_cast<size_t>((kv_len + bs - 1) / bs));
    std::iota(blocks.begin(), blocks.end(), 0);
    StepPlan plan;
    plan.add_sequence(std::vector<int32_t>(tokens.begin() + long(done), tokens.begin() + long(done + n)),
                      kv_len, blocks, /*want_logits=*/done + n == tokens.size());
    backend_.forward(plan, logits_.data());
    length_ = kv_len;
    done += n;
  }
  return logits_;
}

}  // namespace flint
