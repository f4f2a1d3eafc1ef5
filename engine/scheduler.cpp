// Scheduler: queue order, the three phases of a step (decodes, running prefill
// chunks, admissions), preemption by recompute, and the after-step bookkeeping.
#include "engine/scheduler.h"

#include <algorithm>

#include "common/error.h"

namespace flint {

Scheduler::Scheduler(const SchedulerConfig& config, const BlockManagerOptions& blocks)
    : config_(config), block_manager_(blocks) {
  if (config_.max_num_seqs < 1) fail("scheduler: max_num_seqs must be at least 1, got ", config_.max_num_seqs);
  if (config_.max_num_batched_tokens < 1)
    fail("scheduler: max_num_batched_tokens must be at least 1, got ", config_.max_num_batched_tokens);
}

SeqId Scheduler::add(std::vector<int32_t> prompt_token_ids, int32_t priority) {
  if (int64_t(prompt_token_ids.size()) > max_num_tokens_per_seq())
    fail("prompt of ", prompt_token_ids.size(), " tokens exceeds the KV cache (", max_num_tokens_per_seq(), " tokens)");
  const SeqId id = next_id_++;
  auto seq = std::make_unique<Sequence>(id, std::move(prompt_token_ids), priority, next_arrival_++);
  by_id_.emplace(id, seq.get());
  insert_ordered(waiting_, std::move(seq));
  return id;
}

std::unique_ptr<Sequence> Scheduler::remove(SeqId id) {
  for (auto* queue : {&waiting_, &running_}) {
    auto it = std::ranges::find_if(*queue, [&](const auto& s) { return s->id() == id; });
    if (it == queue->end()) continue;
    std::unique_ptr<Sequence> seq = std::move(*it);
    queue->erase(it);
    by_id_.erase(id);
    seq->block_table().reset();
    seq->set_status(SequenceStatus::Finished);
    return seq;
  }
  return nullptr;
}

Sequence* Scheduler::find(SeqId id) {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

const Sequence* Scheduler::find(SeqId id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

void Scheduler::insert_ordered(std::vector<std::unique_ptr<Sequence>>& queue, std::unique_ptr<Sequence> seq) {
  auto runs_after = [&](const std::unique_ptr<Sequence>& e) {
    return e->priority() < seq->priority() || (e->priority() == seq->priority() && e->arrival() > seq->arrival());
  };
  queue.insert(std::ranges::find_if(queue, runs_after), std::move(seq));
}

void Scheduler::preempt_last_running() {
  std::unique_ptr<Sequence> victim = std::move(running_.back());
  running_.pop_back();
  victim->preempt();
  insert_ordered(waiting_, std::move(victim));
}

void Scheduler::add_to_plan(ScheduledStep& step, Sequence& seq, int32_t num_new_tokens) {
  const int32_t start = seq.num_computed_tokens();
  const int32_t kv_len = start + num_new_tokens;
  std::span<const int32_t> fed = seq.token_ids().subspan(size_t(start), size_t(num_new_tokens));
  const bool samples = kv_len == seq.num_tokens();  // the last known token is in this step
  step.plan.add_sequence(std::vector<int32_t>(fed.begin(), fed.end()), kv_len, seq.block_table().block_ids(), samples);
  step.seq_ids.push_back(seq.id());
  if (samples) step.logit_seq_ids.push_back(seq.id());
}

bool Scheduler::admit_front() {
  Sequence& seq = *waiting_.front();
  if (seq.num_tokens() > max_num_tokens_per_seq())
    fail("sequence ", seq.id(), ": ", seq.num_tokens(), " tokens exceed the KV cache (", max_num_tokens_per_seq(), " tokens)");
  std::optional<int32_t> num_cached = block_manager_.allocate(seq.block_table(), seq.token_ids());
  if (!num_cached) return false;
  seq.set_num_computed_tokens(*num_cached);
  seq.set_num_cached_tokens(*num_cached);
  seq.set_num_prefilled_tokens(*num_cached);
  seq.set_status(SequenceStatus::Running);
  std::unique_ptr<Sequence> admitted = std::move(waiting_.front());
  waiting_.erase(waiting_.begin());
  insert_ordered(running_, std::move(admitted));
  return true;
}

int32_t Scheduler::preempt_for_priority() {
  int32_t num_preempted = 0;
  const int32_t block_size = block_manager_.block_size();
  while (!waiting_.empty() && !running_.empty()) {
    const Sequence& next = *waiting_.front();
    if (running_.back()->priority() >= next.priority()) break;  // nobody strictly lower
    if (next.num_tokens() > max_num_tokens_per_seq()) break;    // admission reports it
    if (block_manager_.can_allocate(next.token_ids())) break;    // admission takes it
    // Only when every strictly lower runner together frees enough (their shared
    // blocks not counted, nor cache hits): a preemption that admits nobody is waste.
    int64_t num_reclaimable = block_manager_.num_free_blocks();
    for (auto it = running_.rbegin(); it != running_.rend() && (*it)->priority() < next.priority(); ++it)
      for (int32_t block_id : (*it)->block_table().block_ids()) num_reclaimable += block_manager_.ref_count(block_id) == 1;
    if (num_reclaimable < (int64_t(next.num_tokens()) + block_size - 1) / block_size) break;
    while (!block_manager_.can_allocate(next.token_ids())) {
      if (running_.empty() || running_.back()->priority() >= next.priority())
        fail("scheduler: priority preemption ran out of lower-priority sequences");
      preempt_last_running();
      ++num_preempted;
    }
    if (!admit_front()) fail("scheduler: sequence ", next.id(), " did not fit after priority preemption");
  }
  return num_preempted;
}

ScheduledStep Scheduler::schedule() {
  ScheduledStep step;
  int32_t token_budget = config_.max_num_batched_tokens;
  auto has_room = [&] { return token_budget > 0 && int32_t(step.seq_ids.size()) < config_.max_num_seqs; };

  // 0. A waiting sequence of higher priority than the lowest running one takes the
  // blocks of strictly lower-priority runners (lowest, latest first) when the free
  // ones fall short; it is admitted at once and its prefill runs in phase 2.
  step.num_preempted += preempt_for_priority();

  // 1. Growing sequences, in run order: a decode (the one sampled token), or after
  // tokens appended by the engine, those too, as one chunk. A sequence whose new
  // tokens need blocks and find none free preempts from the back of the run order,
  // itself last.
  int32_t num_growth_preempted = 0;
  std::vector<bool> in_step(running_.size(), false);
  for (size_t i = 0; i < running_.size() && has_room(); ++i) {
    Sequence& seq = *running_[i];
    BlockTable& table = seq.block_table();
    if (table.num_slots() >= seq.num_tokens()) continue;  // a prefill: slots came at admission
    bool preempted_self = false;
    while (table.num_slots() < seq.num_tokens()) {
      if (block_manager_.can_append_slot(table)) {
        block_manager_.append_slot(table);
        continue;
      }
      preempted_self = running_.size() - 1 == i;
      preempt_last_running();
      ++num_growth_preempted;
      if (preempted_self) break;
    }
    if (preempted_self) break;
    const int32_t n = std::min(seq.num_uncomputed_tokens(), token_budget);
    add_to_plan(step, seq, n);
    in_step[i] = true;
    token_budget -= n;
  }
  step.num_preempted += num_growth_preempted;
  // Phase 1's sequences are the decodes; everything after is a prefill chunk, even of one token (a prompt's last
  // token after a prefix-cache hit, or cut off by the budget), so the backend runs it as the rest of its prompt.
  // (One case stays a decode: engine-appended tokens cut by the budget down to a last piece of one token, which
  // needs a budget below the running sequences plus the appended tokens.)
  step.plan.num_decode_seqs = int32_t(step.seq_ids.size());

  // 2. Prefill chunks of admitted sequences (their slots were allocated at admission).
  for (size_t i = 0; i < running_.size() && has_room(); ++i) {
    Sequence& seq = *running_[i];
    if (in_step[i] || seq.num_uncomputed_tokens() == 0) continue;
    const int32_t n = std::min(seq.num_uncomputed_tokens(), token_budget);
    add_to_plan(step, seq, n);
    token_budget -= n;
  }

  // 3. Admissions in run order, each with slots for all its tokens (prompt and,
  // after a preemption, its output) and its cached prefix skipped. A step whose
  // growth preempted admits nothing: the cache is short.
  while (num_growth_preempted == 0 && !waiting_.empty() && has_room()) {
    Sequence* seq = waiting_.front().get();
    if (!admit_front()) break;  // strict order: nothing behind it jumps the queue
    const int32_t n = std::min(seq->num_uncomputed_tokens(), token_budget);
    add_to_plan(step, *seq, n);
    token_budget -= n;
  }
  return step;
}

void Scheduler::postprocess(const ScheduledStep& step, std::span<const int32_t> sampled_token_ids) {
  if (sampled_token_ids.size() != step.logit_seq_ids.size())
    fail("scheduler: ", sampled_token_ids.size(), " sampled tokens for ", step.logit_seq_ids.size(), " logits rows");
  size_t next_sample = 0;
  for (size_t s = 0; s < step.seq_ids.size(); ++s) {
    const SeqId id = step.seq_ids[s];
    const bool samples = next_sample < step.logit_seq_ids.size() && step.logit_seq_ids[next_sample] == id;
    const int32_t sampled = samples ? sampled_token_ids[next_sample++] : 0;
    Sequence* seq = find(id);
    if (seq == nullptr || seq->status() != SequenceStatus::Running) continue;
    const int32_t num_new = step.plan.cu_seqlens[s + 1] - step.plan.cu_seqlens[s];
    seq->set_num_computed_tokens(seq->num_computed_tokens() + num_new);
    const bool prefill = step.plan.num_decode_seqs >= 0 && int32_t(s) >= step.plan.num_decode_seqs;
    if (prefill) seq->set_num_prefilled_tokens(seq->num_computed_tokens());
    if (samples) seq->append_token(sampled);
    block_manager_.commit(seq->block_table(), seq->token_ids(),
                          config_.cache_decoded_blocks ? seq->num_computed_tokens() : seq->num_prefilled_tokens());
  }
}

}  // namespace flint
