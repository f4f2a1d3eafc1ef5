// Sequence: one request's tokens as the scheduler sees them: prompt and output
// ids, how many are in the KV cache, its block table, status and priority.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "engine/block_manager.h"

namespace flint {

using SeqId = uint64_t;

enum class SequenceStatus {
  Waiting,   // queued, holds no blocks (new, or preempted: its output is kept)
  Running,   // holds blocks for all its tokens; prefilling or decoding
  Finished,  // removed from the scheduler; holds no blocks
};

const char* to_string(SequenceStatus status);

class Sequence {
 public:
  // Throws flint::Error when the prompt is empty.
  Sequence(SeqId id, std::vector<int32_t> prompt_token_ids, int32_t priority = 0, uint64_t arrival = 0);

  SeqId id() const { return id_; }
  // Higher runs first; equal priorities run in arrival order.
  int32_t priority() const { return priority_; }
  uint64_t arrival() const { return arrival_; }
  SequenceStatus status() const { return status_; }
  void set_status(SequenceStatus status) { status_ = status; }

  // Prompt then output, end to end: what a resumed sequence recomputes.
  std::span<const int32_t> token_ids() const { return token_ids_; }
  std::span<const int32_t> prompt_token_ids() const { return std::span(token_ids_).first(size_t(num_prompt_tokens_)); }
  std::span<const int32_t> output_token_ids() const { return std::span(token_ids_).subspan(size_t(num_prompt_tokens_)); }
  int32_t num_tokens() const { return int32_t(token_ids_.size()); }
  int32_t num_prompt_tokens() const { return num_prompt_tokens_; }
  int32_t num_output_tokens() const { return num_tokens() - num_prompt_tokens_; }
  int32_t last_token_id() const { return token_ids_.back(); }
  void append_token(int32_t token_id) { token_ids_.push_back(token_id); }

  // Tokens whose K/V are in the cache: positions [0, num_computed_tokens()).
  int32_t num_computed_tokens() const { return num_computed_tokens_; }
  void set_num_computed_tokens(int32_t n) { num_computed_tokens_ = n; }
  // Tokens still to feed before the next sample (1 while decoding).
  int32_t num_uncomputed_tokens() const { return num_tokens() - num_computed_tokens_; }
  // Of the computed tokens, how many came from the prefix cache at admission.
  int32_t num_cached_tokens() const { return num_cached_tokens_; }
  void set_num_cached_tokens(int32_t n) { num_cached_tokens_ = n; }
  // Tokens [0, num_prefilled_tokens()) had their K/V written by prefill chunks (or came from the prefix cache);
  // the decodes after them wrote the rest (SchedulerConfig::cache_decoded_blocks).
  int32_t num_prefilled_tokens() const { return num_prefilled_tokens_; }
  void set_num_prefilled_tokens(int32_t n) { num_prefilled_tokens_ = n; }

  BlockTable& block_table() { return block_table_; }
  const BlockTable& block_table() const { return block_table_; }

  int32_t num_preemptions() const { return num_preemptions_; }
  // Back to waiting: blocks returned, KV forgotten, output kept for the recompute.
  void preempt();

 private:
  SeqId id_;
  int32_t priority_;
  uint64_t arrival_;
  SequenceStatus status_ = SequenceStatus::Waiting;
  std::vector<int32_t> token_ids_;
  int32_t num_prompt_tokens_;
  int32_t num_computed_tokens_ = 0;
  int32_t num_cached_tokens_ = 0;
  int32_t num_prefilled_tokens_ = 0;
  int32_t num_preemptions_ = 0;
  BlockTable block_table_;
};

}  // namespace flint
