// Sequence: construction, status names and preemption.
#include "engine/sequence.h"

#include "common/error.h"

namespace flint {

const char* to_string(SequenceStatus status) {
  switch (status) {
    case SequenceStatus::Waiting: return "waiting";
    case SequenceStatus::Running: return "running";
    case SequenceStatus::Finished: return "finished";
  }
  return "unknown";
}

Sequence::Sequence(SeqId id, std::vector<int32_t> prompt_token_ids, int32_t priority, uint64_t arrival)
    : id_(id), priority_(priority), arrival_(arrival), token_ids_(std::move(prompt_token_ids)),
      num_prompt_tokens_(int32_t(token_ids_.size())) {
  if (token_ids_.empty()) fail("sequence ", id, ": empty prompt");
}

void Sequence::preempt() {
  block_table_.reset();
  num_computed_tokens_ = 0;
  num_cached_tokens_ = 0;
  num_prefilled_tokens_ = 0;
  status_ = SequenceStatus::Waiting;
  ++num_preemptions_;
}

}  // namespace flint
