// OfflineRunner: one sequence at a time through a Backend, its KV in blocks
// 0, 1, 2, ... For flint-run, golden tests and the CPU benchmark; the engine
// loop (continuous batching) is what serves requests.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "model/backend.h"

namespace flint {

class OfflineRunner {
 public:
  // Prompts longer than prefill_chunk are fed in chunks (chunked prefill).
  explicit OfflineRunner(Backend& backend, int32_t prefill_chunk = 512);

  // Appends `tokens` to the sequence and returns the logits (vocab) of the last
  // one. Throws flint::Error when the sequence would outgrow the KV cache. As the
  // engine's scheduler does (StepPlan::num_decode_seqs), one token fed after
  // others is a decode and every other feed a prefill, however it is chunked.
  const std::vector<float>& feed(std::span<const int32_t> tokens);
  // Like feed, but returns the logits of every token fed: (tokens.size(), vocab), row-major. For
  // comparing a whole prompt's logits with a reference (flint-run --dump-logits).
  std::vector<float> feed_all(std::span<const int32_t> tokens);
  void reset() { length_ = 0; }
  int32_t length() const { return length_; }
  int32_t capacity() const { return backend_.num_kv_blocks() * backend_.block_size(); }

 private:
  // Feeds `tokens` in chunks; writes the last token's logits, or every token's when all_rows, to out.
  void run(std::span<const int32_t> tokens, bool all_rows, float* out);

  Backend& backend_;
  int32_t prefill_chunk_;
  int32_t length_ = 0;
  std::vector<float> logits_;
};

}  // namespace flint
