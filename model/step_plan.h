// StepPlan: the flattened batch one forward pass runs. The engine fills it;
// a Backend reads it. Sequences are laid end to end in token order.
#pragma once
#include <cstdint>
#include <vector>

namespace flint {

struct StepPlan {
  std::vector<int32_t> token_ids;    // (num_tokens) the new tokens of every sequence
  std::vector<int32_t> positions;    // (num_tokens) each token's position in its sequence
  std::vector<int32_t> cu_seqlens;   // (num_seqs + 1) sequence s owns tokens [cu[s], cu[s+1])
  std::vector<int32_t> kv_lens;      // (num_seqs) tokens in the KV cache after this step
  // (num_seqs × max_blocks_per_seq) KV block ids, row s for sequence s; the
  // token at position p lives in block block_table[s][p / block_size], slot p % block_size.
  std::vector<int32_t> block_table;
  int32_t max_blocks_per_seq = 0;
  std::vector<int32_t> logit_rows;   // token indices whose logits are returned, ascending
  // The step's growing sequences come first: sequences [0, num_decode_seqs) feed the tokens after their last
  // computed one (a decode: the one token sampled last); every sequence from num_decode_seqs on is a prefill chunk
  // (prompt tokens, or a preempted sequence's recompute), one token included. A backend whose attention differs
  // between the two (the CUDA kernels) picks by it, so a prompt token gets the same arithmetic however the
  // scheduler cut the prompt and whatever the prefix cache held (kernels/attention_params.h, attention_is_decode).
  // -1: every one-token sequence is a decode (plans that never cut a prompt down to one token).
  int32_t num_decode_seqs = -1;

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_seqs() const { return static_cast<int32_t>(kv_lens.size()); }

  // Appends one sequence: `tokens` at positions [kv_len - tokens.size(), kv_len),
  // its block ids, and (when want_logits) its last token as a logit row.
  void add_sequence(const std::vector<int32_t>& tokens, int32_t kv_len,
                    const std::vector<int32_t>& blocks, bool want_logits);
  // Throws flint::Error when the arrays disagree (sizes, ranges, positions).
  void validate(int32_t block_size, int32_t num_blocks) const;
};

}  // namespace flint
