#include "engine/offline_runner.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"

namespace flint {

OfflineRunner::OfflineRunner(Backend& backend, int32_t prefill_chunk)
    : backend_(backend), prefill_chunk_(std::max(1, prefill_chunk)),
      logits_(size_t(backend.config().vocab_size)) {}

const std::vector<float>& OfflineRunner::feed(std::span<const int32_t> tokens) {
  run(tokens, /*all_rows=*/false, logits_.data());
  return logits_;
}

std::vector<float> OfflineRunner::feed_all(std::span<const int32_t> tokens) {
  std::vector<float> out(tokens.size() * size_t(backend_.config().vocab_size));
  run(tokens, /*all_rows=*/true, out.data());
  return out;
}

void OfflineRunner::run(std::span<const int32_t> tokens, bool all_rows, float* out) {
  if (tokens.empty()) fail("offline runner: nothing to feed");
  if (int64_t(length_) + int64_t(tokens.size()) > capacity())
    fail("sequence of ", length_ + int64_t(tokens.size()), " tokens exceeds the KV cache (", capacity(), " tokens)");
  const int32_t bs = backend_.block_size();
  const size_t vocab = size_t(backend_.config().vocab_size);
  for (size_t done = 0; done < tokens.size();) {
    const size_t n = std::min(tokens.size() - done, size_t(prefill_chunk_));
    const int32_t kv_len = length_ + int32_t(n);
    std::vector<int32_t> blocks(static_cast<size_t>((kv_len + bs - 1) / bs));
    std::iota(blocks.begin(), blocks.end(), 0);
    StepPlan plan;
    plan.add_sequence(std::vector<int32_t>(tokens.begin() + long(done), tokens.begin() + long(done + n)),
                      kv_len, blocks, /*want_logits=*/all_rows || done + n == tokens.size());
    plan.num_decode_seqs = tokens.size() == 1 && length_ > 0 ? 1 : 0;
    if (all_rows) {
      plan.logit_rows.resize(n);
      std::iota(plan.logit_rows.begin(), plan.logit_rows.end(), 0);
    }
    backend_.forward(plan, all_rows ? out + done * vocab : out);
    length_ = kv_len;
    done += n;
  }
}

}  // namespace flint
