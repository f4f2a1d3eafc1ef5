// The CPU twin of the GPU sampler: the sets and the draw kernels/sampling_params.h defines, computed the plain way
// (sort by order key, prefix sums of integer weights) instead of the kernel's radix selects; both give the same
// sets because the sets are defined by exact integer sums and keys. Compiled with -ffp-contract=off (CMake) so the
// shared float arithmetic rounds every operation as the kernel's __f*_rn intrinsics do.
#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"

namespace flint::cpu {
namespace {

using namespace flint::sampling;

// Step 1: penalties in place (kernels/sampling_params.h).
void apply_penalties(const SampleParams& p, int r, float* logits) {
  const SampleRow& row = p.rows[r];
  if (p.maybe_rep_offsets && row.repetition_penalty != 1.0f) {
    for (int32_t j = p.maybe_rep_offsets[r]; j < p.maybe_rep_offsets[r + 1]; ++j) {
      const int32_t t = p.rep_ids[j];
      if (t < 0 || t >= p.vocab) continue;
      const float l = logits[t];
      logits[t] = l > 0.0f ? div(l, row.repetition_penalty) : mul(l, row.repetition_penalty);
    }
  }
  if (p.maybe_freq_offsets && (row.presence_penalty != 0.0f || row.frequency_penalty != 0.0f)) {
    for (int32_t j = p.maybe_freq_offsets[r]; j < p.maybe_freq_offsets[r + 1]; ++j) {
      const int32_t t = p.freq_ids[j];
      if (t < 0 || t >= p.vocab) continue;
      logits[t] = sub(logits[t], add(row.presence_penalty, mul(row.frequency_penalty, float(p.freq_counts[j]))));
    }
  }
}

struct RowResult {
  int32_t token = 0;
  float logprob = 0.0f;
};

// Steps 2 to 6 on a row whose penalties are applied; `kept` (when given) receives the truncated set.
RowResult select(const SampleRow& row, const float* logits, int32_t vocab, std::vector<uint8_t>* kept) {
  const bool greedy = row.temperature == 0.0f;
  const float inv_t = greedy ? 1.0f : div(1.0f, row.temperature);
  uint64_t top_key = 0;
  for (int32_t i = 0; i < vocab; ++i) top_key = std::max(top_key, order_key(logits[i], i));
  const int32_t top = int32_t(0xFFFFFFFFu - uint32_t(top_key));
  const float m = mul(logits[top], inv_t);
  uint64_t total_all = 0;
  for (int32_t i = 0; i < vocab; ++i) total_all += weight(mul(logits[i], inv_t), m);

  RowResult res;
  std::vector<uint8_t> keep(static_cast<size_t>(vocab), 0);
  if (greedy) {
    keep[size_t(top)] = 1;
    res.token = top;
  } else {
    // Order (logit descending, id ascending) = order key descending.
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int32_t a, int32_t b) { return order_key(logits[a], a) > order_key(logits[b], b); });
    size_t n = size_t(vocab);
    if (row.top_k > 0 && row.top_k < vocab) n = size_t(row.top_k);
    // min-p over the top-k prefix: the first token and every token at or above the floor (a set, as the kernel).
    std::vector<int32_t> cand;
    cand.reserve(n);
    for (size_t j = 0; j < n; ++j) {
      const int32_t t = order[j];
      if (j == 0 || row.min_p == 0.0f || sample_exp(sub(mul(logits[t], inv_t), m)) >= row.min_p) cand.push_back(t);
    }
    if (row.top_p < 1.0f) {
      uint64_t total = 0;
      for (int32_t t : cand) total += weight(mul(logits[t], inv_t), m);
      uint64_t target = uint64_t(std::ceil(double(row.top_p) * double(total)));
      if (target > total) target = total;
      uint64_t mass = 0;
      size_t k = 0;
      while (k < cand.size() && mass < target) mass += weight(mul(logits[cand[k]], inv_t), m), ++k;
      cand.resize(std::max<size_t>(k, 1));
    }
    for (int32_t t : cand) keep[size_t(t)] = 1;
    uint64_t kept_total = 0;
    for (int32_t t : cand) kept_total += weight(mul(logits[t], inv_t), m);
    const uint64_t u = uniform_below(kept_total, row.seed, row.step);
    // No kept weight covers u only when every kept weight is 0 (kept_total 0, u 0: tempered logits that are not
    // finite, e.g. a temperature so small that 1 / T or logit / T overflows): the top token, as the kernel.
    uint64_t acc = 0;
    res.token = top;
    for (int32_t i = 0; i < vocab; ++i) {
      if (!keep[size_t(i)]) continue;
      acc += weight(mul(logits[i], inv_t), m);
      if (u < acc) {
        res.token = i;
        break;
      }
    }
  }
  const double lse_shift = std::log(double(total_all)) - double(kSampleWeightShift) * 0.69314718055994530942;
  res.logprob = float(double(sub(mul(logits[res.token], inv_t), m)) - lse_shift);
  if (kept) *kept = std::move(keep);
  return res;
}

void check(const SampleParams& p) {
  if (std::string e = sample_params_error(p); !e.empty()) fail(e);
  for (int r = 0; r < p.num_rows; ++r)
    if (std::string e = sample_row_error(p.rows[r]); !e.empty()) fail("row ", r, ": ", e);
}

}  // namespace

void sample(const SampleParams& p) {
  check(p);
  for (int r = 0; r < p.num_rows; ++r) {
    float* logits = p.logits + int64_t(r) * p.ld_logits;
    apply_penalties(p, r, logits);
    const RowResult res = select(p.rows[r], logits, p.vocab, nullptr);
    p.token_ids[r] = res.token;
    if (p.maybe_logprobs) p.maybe_logprobs[r] = res.logprob;
  }
}

void sample_kept_tokens(const SampleParams& p, int row, std::vector<uint8_t>* kept) {
  check(p);
  if (row < 0 || row >= p.num_rows) fail("sample_kept_tokens: row ", row, " outside [0, ", p.num_rows, ")");
  select(p.rows[row], p.logits + int64_t(row) * p.ld_logits, p.vocab, kept);
}

void PenaltyLists::add_row(std::span<const int32_t> context, std::span<const int32_t> generated, int32_t vocab) {
  std::unordered_set<int32_t> seen;
  for (int32_t t : context)
    if (t >= 0 && t < vocab && seen.insert(t).second) rep_ids.push_back(t);
  rep_offsets.push_back(int32_t(rep_ids.size()));
  std::unordered_map<int32_t, int32_t> counts;
  std::vector<int32_t> first_seen;
  for (int32_t t : generated) {
    if (t < 0 || t >= vocab) continue;
    if (counts[t]++ == 0) first_seen.push_back(t);
  }
  for (int32_t t : first_seen) freq_ids.push_back(t), freq_counts.push_back(counts[t]);
  freq_offsets.push_back(int32_t(freq_ids.size()));
}

void SampleBatch::add_row(const SampleRow& row, std::span<const int32_t> context, std::span<const int32_t> generated,
                          int32_t vocab) {
  rows.push_back(row);
  const bool rep = row.repetition_penalty != 1.0f;
  const bool freq = row.presence_penalty != 0.0f || row.frequency_penalty != 0.0f;
  penalties.add_row(rep ? context : std::span<const int32_t>{}, freq ? generated : std::span<const int32_t>{}, vocab);
}

SampleParams SampleBatch::host_params(float* logits, int32_t vocab, int64_t ld_logits, int32_t* token_ids,
                                      float* maybe_logprobs) const {
  SampleParams p;
  p.num_rows = num_rows();
  p.vocab = vocab;
  p.logits = logits;
  p.ld_logits = ld_logits;
  p.rows = rows.data();
  if (!penalties.rep_ids.empty()) {  // else no row has a list (and an empty vector's data() may be null)
    p.maybe_rep_offsets = penalties.rep_offsets.data();
    p.rep_ids = penalties.rep_ids.data();
  }
  if (!penalties.freq_ids.empty()) {
    p.maybe_freq_offsets = penalties.freq_offsets.data();
    p.freq_ids = penalties.freq_ids.data();
    p.freq_counts = penalties.freq_counts.data();
  }
  p.token_ids = token_ids;
  p.maybe_logprobs = maybe_logprobs;
  return p;
}

}  // namespace flint::cpu
