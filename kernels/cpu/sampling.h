// The CPU twin of the GPU sampler (kernels/cuda/sampling.h): the same SampleParams with host pointers and the same
// arithmetic (kernels/sampling_params.h), so it picks the same token as the kernel for the same logits; and the
// host helper that builds the penalty lists both read.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/sampling_params.h"

namespace flint::cpu {

// Samples every row of p (host pointers). Throws flint::Error naming the bad field when p or a row's parameters
// are invalid.
void sample(const SampleParams& p);

// Row r of p (penalties already applied to its logits, as sample() does first): which tokens the truncation keeps
// (kept[i] != 0), for tests that compare the filters with engine/sampler.
void sample_kept_tokens(const SampleParams& p, int row, std::vector<uint8_t>* kept);

// Penalty lists in SampleParams' CSR layout, appended for one row at a time (call once per row, in row order).
struct PenaltyLists {
  std::vector<int32_t> rep_offsets{0}, rep_ids;
  std::vector<int32_t> freq_offsets{0}, freq_ids, freq_counts;
  // context: the tokens the repetition penalty looks at (prompt and output); generated: those presence and
  // frequency count (output only), as Sampler::sample takes them. Ids are deduplicated; ids outside [0, vocab)
  // dropped.
  void add_row(std::span<const int32_t> context, std::span<const int32_t> generated, int32_t vocab);
};

// A step's rows with their penalty lists, on the host: what the engine hands a backend that samples on its device
// (model/backend.h Backend::forward_sample), which copies it over as is, and what the twin samples directly.
struct SampleBatch {
  std::vector<SampleRow> rows;
  PenaltyLists penalties;

  int num_rows() const { return int(rows.size()); }
  // Empties it for the next step, keeping the vectors' memory (the engine reuses one batch every step).
  void clear() {
    rows.clear();
    penalties.rep_offsets.assign(1, 0);
    penalties.rep_ids.clear();
    penalties.freq_offsets.assign(1, 0);
    penalties.freq_ids.clear();
    penalties.freq_counts.clear();
  }
  // Appends one row. Its repetition list is built from `context` only when its repetition penalty is on, its
  // presence/frequency list from `generated` only when one of those is on (an unused list costs nothing).
  void add_row(const SampleRow& row, std::span<const int32_t> context, std::span<const int32_t> generated,
               int32_t vocab);
  // The SampleParams of these rows over host arrays: the twin's (cpu::sample) input.
  SampleParams host_params(float* logits, int32_t vocab, int64_t ld_logits, int32_t* token_ids,
                           float* maybe_logprobs) const;
};

}  // namespace flint::cpu
