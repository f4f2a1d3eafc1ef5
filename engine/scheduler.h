// Scheduler: owns the sequences (waiting, running) and the block manager, and picks
// each step's work: decodes, then prefill chunks in a token budget; preempts by recompute.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/block_manager.h"
#include "engine/sequence.h"
#include "model/step_plan.h"

namespace flint {

struct SchedulerConfig {
  int32_t max_num_seqs = 256;             // sequences in one step
  int32_t max_num_batched_tokens = 2048;  // tokens in one step (decodes count one each)
  // Whether full blocks whose K/V decode steps wrote (a sequence's output, e.g. a chat's last answer) enter the
  // prefix cache. Off for a backend whose decode arithmetic differs from its prefill's (the CUDA kernels:
  // Backend::decode_matches_prefill): a later prompt that holds those tokens then computes them as prefill, so its
  // bits never depend on whether the blocks were still cached. Blocks written by prefill chunks are cached either way.
  bool cache_decoded_blocks = true;
};

// One step's work: the plan a Backend runs and whose rows belong to whom.
struct ScheduledStep {
  StepPlan plan;
  std::vector<SeqId> seq_ids;        // (plan.num_seqs()) sequence s of the plan
  std::vector<SeqId> logit_seq_ids;  // (plan.logit_rows.size()) the sequence each logits row samples for
  int32_t num_preempted = 0;         // running sequences sent back to waiting by this step
  bool empty() const { return seq_ids.empty(); }
};

class Scheduler {
 public:
  // Throws flint::Error on a budget below 1 or bad block manager options.
  Scheduler(const SchedulerConfig& config, const BlockManagerOptions& blocks);

  // Queues a new sequence; returns its id. Throws flint::Error when the prompt is
  // empty or could never fit in the KV cache.
  SeqId add(std::vector<int32_t> prompt_token_ids, int32_t priority = 0);
  // Takes a sequence out (finished or cancelled), its blocks returned at once;
  // the caller gets it back (status Finished) to read its output. Nullptr when unknown.
  std::unique_ptr<Sequence> remove(SeqId id);

  // Chooses the next step, in four phases:
  //  0. priority: while the first waiting sequence has a higher priority than the
  //     lowest running one and the free blocks do not hold it, running sequences of
  //     strictly lower priority are preempted (lowest priority, latest arrival
  //     first; only when together they free enough) and it is admitted;
  //  1. growth: each running sequence with tokens beyond its slots (the sampled
  //     token; more when the engine appended some, e.g. a forced think_end) gets
  //     slots for all of them and feeds them as one chunk, within the token budget,
  //     in run order; when no block is free the lowest-priority, latest-arrived
  //     running sequence is preempted (possibly itself);
  //  2. prefill chunks of running sequences;
  //  3. new admissions from waiting, in order, unless phase 1 preempted.
  // Equal priorities never preempt each other in phase 0, and a preempted sequence
  // re-enters waiting in priority order, so preemption only flows downward.
  // Throws flint::Error when the first waiting sequence has outgrown the whole
  // cache (the engine must stop it first).
  ScheduledStep schedule();
  // After the backend ran `step`: records the computed tokens, appends
  // sampled_token_ids[i] to step.logit_seq_ids[i] and offers the newly full
  // blocks to the prefix cache. Sequences removed since schedule() are skipped.
  // Between steps the caller may append more tokens to a sequence (find() then
  // Sequence::append_token); the next schedule() feeds them and samples after the last.
  void postprocess(const ScheduledStep& step, std::span<const int32_t> sampled_token_ids);

  Sequence* find(SeqId id);
  const Sequence* find(SeqId id) const;
  bool has_unfinished() const { return !waiting_.empty() || !running_.empty(); }
  int32_t num_waiting() const { return int32_t(waiting_.size()); }
  int32_t num_running() const { return int32_t(running_.size()); }
  const BlockManager& block_manager() const { return block_manager_; }
  // The longest sequence (prompt + output) the cache can hold.
  int32_t max_num_tokens_per_seq() const { return block_manager_.num_blocks() * block_manager_.block_size(); }
  const SchedulerConfig& config() const { return config_; }

 private:
  void preempt_last_running();
  // Moves the first waiting sequence to running with blocks for all its tokens;
  // false (nothing changed) when they do not fit.
  bool admit_front();
  int32_t preempt_for_priority();  // phase 0; returns the number preempted
  static void insert_ordered(std::vector<std::unique_ptr<Sequence>>& queue, std::unique_ptr<Sequence> seq);
  static void add_to_plan(ScheduledStep& step, Sequence& seq, int32_t num_new_tokens);

  SchedulerConfig config_;
  BlockManager block_manager_;  // declared before the sequences: outlives their block tables
  // Both in run order: priority descending, then arrival ascending.
  std::vector<std::unique_ptr<Sequence>> waiting_, running_;
  std::unordered_map<SeqId, Sequence*> by_id_;
  SeqId next_id_ = 1;
  uint64_t next_arrival_ = 0;
};

}  // namespace flint
