#include "model/step_plan.h"

#include "common/error.h"

namespace flint {

void StepPlan::add_sequence(const std::vector<int32_t>& tokens, int32_t kv_len,
                            const std::vector<int32_t>& blocks, bool want_logits) {
  if (cu_seqlens.empty()) cu_seqlens.push_back(0);
  const int32_t first_pos = kv_len - static_cast<int32_t>(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    token_ids.push_back(tokens[i]);
    positions.push_back(first_pos + static_cast<int32_t>(i));
  }
  cu_seqlens.push_back(num_tokens());
  kv_lens.push_back(kv_len);
  if (static_cast<int32_t>(blocks.size()) > max_blocks_per_seq) {
    // Widen every existing row to the new width (padding with block 0, never read).
    const int32_t width = static_cast<int32_t>(blocks.size());
    std::vector<int32_t> wider;
    wider.reserve(size_t(num_seqs()) * size_t(width));
    for (int32_t s = 0; s + 1 < num_seqs(); ++s) {
      for (int32_t j = 0; j < width; ++j)
        wider.push_back(j < max_blocks_per_seq ? block_table[size_t(s * max_blocks_per_seq + j)] : 0);
    }
    block_table = std::move(wider);
    max_blocks_per_seq = width;
  }
  for (int32_t j = 0; j < max_blocks_per_seq; ++j)
    block_table.push_back(j < static_cast<int32_t>(blocks.size()) ? blocks[size_t(j)] : 0);
  if (want_logits && !tokens.empty()) logit_rows.push_back(num_tokens() - 1);
}

void StepPlan::validate(int32_t block_size, int32_t num_blocks) const {
  const size_t n = token_ids.size();
  if (positions.size() != n) fail("step plan: ", positions.size(), " positions for ", n, " tokens");
  if (cu_seqlens.size() != kv_lens.size() + 1) fail("step plan: cu_seqlens has ", cu_seqlens.size(), " entries for ", kv_lens.size(), " sequences");
  if (cu_seqlens.front() != 0 || cu_seqlens.back() != int32_t(n)) fail("step plan: cu_seqlens does not span the tokens");
  if (block_table.size() != kv_lens.size() * size_t(max_blocks_per_seq)) fail("step plan: block table size mismatch");
  for (int32_t s = 0; s < num_seqs(); ++s) {
    const int32_t b = cu_seqlens[size_t(s)], e = cu_seqlens[size_t(s) + 1];
    if (e < b) fail("step plan: sequence ", s, ": cu_seqlens decreasing");
    const int32_t kv_len = kv_lens[size_t(s)];
    if (int64_t(kv_len) > int64_t(max_blocks_per_seq) * block_size) fail("step plan: sequence ", s, ": kv_len ", kv_len, " exceeds its blocks");
    for (int32_t t = b; t < e; ++t) {
      if (positions[size_t(t)] < 0 || positions[size_t(t)] >= kv_len) fail("step plan: token ", t, ": position ", positions[size_t(t)], " outside [0, ", kv_len, ")");
    }
    for (int32_t j = 0; j * block_size < kv_len; ++j) {
      int32_t blk = block_table[size_t(s * max_blocks_per_seq + j)];
      if (blk < 0 || blk >= num_blocks) fail("step plan: sequence ", s, ": block id ", blk, " outside [0, ", num_blocks, ")");
    }
  }
  if (num_decode_seqs < -1 || num_decode_seqs > num_seqs())
    fail("step plan: num_decode_seqs ", num_decode_seqs, " outside [-1, ", num_seqs(), "]");
  for (size_t i = 0; i < logit_rows.size(); ++i) {
    if (logit_rows[i] < 0 || logit_rows[i] >= int32_t(n) || (i > 0 && logit_rows[i] <= logit_rows[i - 1]))
      fail("step plan: logit row ", logit_rows[i], " invalid");
  }
}

}  // namespace flint
