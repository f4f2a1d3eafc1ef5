// Sampling on the device: the parameter structs and the per-value arithmetic shared by the CUDA kernel
// (kernels/cuda/sampling.h) and its CPU twin (kernels/cpu/sampling.h), so both pick the same token for the same
// logits, bit for bit. No CUDA types here.
//
// Per row, in engine/sampler.cpp's order:
//  1. penalties, in place on the fp32 logits: repetition over the distinct ids of the context (prompt + output),
//     then presence + frequency · count over the distinct ids of the output (the host builds both lists,
//     cpu::build_penalty_lists);
//  2. greedy (temperature 0): the largest logit, lowest id among equals (as Sampler);
//  3. otherwise s_i = logit_i · (1 / temperature), m = max s, and each token's weight
//       q_i = uint64(sample_exp(s_i - m) · 2^40)     (the top token weighs exactly 2^40)
//     an integer, so every sum of weights below is exact and the same in any order (no float reduction order
//     for kernel and twin to agree on). Tokens below 2^-40 of the top one weigh 0 and are never drawn: at most
//     vocab · 2^-40 (1.4e-7 at 152k) of the distribution is lost.
//  4. truncation, over the order (logit descending, id ascending) that Sampler sorts by:
//       top-k:  the first top_k tokens (off: 0 or >= vocab);
//       min-p:  of those, the first token and every token with sample_exp(s_i - m) >= min_p (Sampler: p_i >=
//               min_p · p_0; the same set up to rounding at the boundary);
//       top-p:  of those, the shortest prefix whose weight reaches ceil(top_p · total) (Sampler: kept_mass >=
//               top_p · total, in doubles);
//  5. the draw: u uniform in [0, kept total) from Philox-4x32-10 keyed by seed, counter (step, draw), by Lemire's
//     unbiased multiply-and-reject; the token is the one whose weight covers u when the kept weights are laid
//     out in id order (the distribution is Sampler's: weight / kept total; only the layout differs); when the
//     kept total is 0 (every tempered logit non-finite against the max: a temperature so small that 1 / T or
//     logit / T overflows) the top token;
//  6. logprob of the chosen token under the tempered, penalised, untruncated distribution (Sampler's):
//       s_chosen - m - log(Σ_all q_i · 2^-40)   (within ~2e-7 of Sampler's log-softmax).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/matmul_params.h"  // FLINT_HOST_DEVICE

namespace flint {

// One row's sampling parameters (engine/sampler.h SamplingParams, less num_logprobs, plus the counter).
struct SampleRow {
  float temperature = 1.0f;         // 0: greedy
  int32_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // (0, 1]; 1: off
  float min_p = 0.0f;               // [0, 1]; 0: off
  float repetition_penalty = 1.0f;  // > 0; 1: off
  float presence_penalty = 0.0f;    // [-2, 2]
  float frequency_penalty = 0.0f;   // [-2, 2]
  uint32_t reserved = 0;            // keeps seed 8-byte aligned in device arrays; set 0
  uint64_t seed = 0;
  uint64_t step = 0;                // the draw's counter: e.g. the sequence's output position
};

static_assert(sizeof(SampleRow) == 48 && alignof(SampleRow) == 8, "SampleRow is copied to the device as is");

// A batch of rows to sample. Pointers are device pointers for the kernel, host pointers for the twin.
struct SampleParams {
  int num_rows = 0, vocab = 0;
  float* logits = nullptr;               // (num_rows, vocab) fp32, rows ld_logits apart; penalties applied in place
  int64_t ld_logits = 0;
  const SampleRow* rows = nullptr;       // (num_rows); valid per sample_row_error (the host checks before upload)
  // Repetition penalty: row r's distinct context ids are rep_ids[rep_offsets[r] .. rep_offsets[r + 1]).
  // Null offsets: no row has any. Ids outside [0, vocab) are skipped.
  const int32_t* maybe_rep_offsets = nullptr;  // (num_rows + 1)
  const int32_t* rep_ids = nullptr;
  // Presence/frequency penalties: row r's distinct output ids freq_ids[freq_offsets[r] .. freq_offsets[r + 1]),
  // each with its number of occurrences in the output (>= 1) in freq_counts.
  const int32_t* maybe_freq_offsets = nullptr;  // (num_rows + 1)
  const int32_t* freq_ids = nullptr;
  const int32_t* freq_counts = nullptr;
  int32_t* token_ids = nullptr;          // (num_rows) out
  float* maybe_logprobs = nullptr;       // (num_rows) out, or null
  // The CUDA sampler only (the twin ignores these). Device scratch that lets it split a row over several blocks
  // when the batch is small (cuda::sample_workspace_bytes; null: a block per row), and host copies of the rows'
  // parameters, which let it queue only the stages they need (null: as many as any row can need).
  void* maybe_workspace = nullptr;
  size_t workspace_bytes = 0;
  const SampleRow* maybe_host_rows = nullptr;  // (num_rows)
};

constexpr int kSampleThreads = 1024;      // threads per row (one block per row)
constexpr int kSampleWeightShift = 40;    // q_i = exp(s_i - m) · 2^40

// Empty when the row's parameters are valid (SamplingParams::validate's ranges), else what is wrong.
inline std::string sample_row_error(const SampleRow& r) {
  auto bad = [](const char* name, double v, const char* want) {
    return std::string("sampling: ") + name + " = " + std::to_string(v) + " " + want;
  };
  if (!(r.temperature >= 0.0f) || !(r.temperature < 3.0e38f)) return bad("temperature", r.temperature, "must be >= 0 and finite");
  if (r.top_k < 0) return bad("top_k", r.top_k, "must be >= 0");
  if (!(r.top_p > 0.0f && r.top_p <= 1.0f)) return bad("top_p", r.top_p, "must be in (0, 1]");
  if (!(r.min_p >= 0.0f && r.min_p <= 1.0f)) return bad("min_p", r.min_p, "must be in [0, 1]");
  if (!(r.repetition_penalty > 0.0f) || !(r.repetition_penalty < 3.0e38f))
    return bad("repetition_penalty", r.repetition_penalty, "must be > 0 and finite");
  if (!(r.presence_penalty >= -2.0f && r.presence_penalty <= 2.0f)) return bad("presence_penalty", r.presence_penalty, "must be in [-2, 2]");
  if (!(r.frequency_penalty >= -2.0f && r.frequency_penalty <= 2.0f)) return bad("frequency_penalty", r.frequency_penalty, "must be in [-2, 2]");
  return {};
}

// Shapes and pointers (not the device arrays' contents).
inline std::string sample_params_error(const SampleParams& p) {
  if (p.num_rows < 0) return "sampling: num_rows = " + std::to_string(p.num_rows) + " must be >= 0";
  if (p.vocab < 1 || p.vocab > (1 << 24))
    return "sampling: vocab = " + std::to_string(p.vocab) + " must be in [1, 2^24]";
  if (p.ld_logits < p.vocab) return "sampling: ld_logits = " + std::to_string(p.ld_logits) + " is less than vocab";
  if (p.num_rows > 0 && (!p.logits || !p.rows || !p.token_ids)) return "sampling: logits, rows and token_ids must not be null";
  if (p.maybe_rep_offsets && !p.rep_ids) return "sampling: rep_ids must not be null when maybe_rep_offsets is given";
  if (p.maybe_freq_offsets && (!p.freq_ids || !p.freq_counts))
    return "sampling: freq_ids and freq_counts must not be null when maybe_freq_offsets is given";
  return {};
}

// ---- the per-value arithmetic both sides run (each operation rounded once; no fused multiply-add except where
// written as sample_fma; the CPU twin's file is compiled with -ffp-contract=off so the host compiler fuses nothing)

namespace sampling {

FLINT_HOST_DEVICE inline uint32_t f32_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
FLINT_HOST_DEVICE inline float bits_f32(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
FLINT_HOST_DEVICE inline float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
FLINT_HOST_DEVICE inline float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
FLINT_HOST_DEVICE inline float sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
FLINT_HOST_DEVICE inline float sample_fma(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return __builtin_fmaf(a, b, c);
#endif
}
FLINT_HOST_DEVICE inline float div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

FLINT_HOST_DEVICE inline float round_int(float a) {  // to the nearest integer, ties to even
#ifdef __CUDA_ARCH__
  return rintf(a);
#else
  return __builtin_rintf(a);
#endif
}

// e^x for x <= 0 (the only arguments sampling takes: s_i - max), within 2 ulp of the true value, the same bits on
// host and device. x = k·ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact product), e^r by a degree-7
// polynomial (Horner with fused multiply-adds), times 2^k built from the exponent bits. Below -87.3 the result
// is 0 (it would be a denormal: below any weight that counts); -inf and NaN give 0.
FLINT_HOST_DEVICE inline float sample_exp(float x) {
  if (!(x > -87.0f)) return 0.0f;
  if (x > 0.0f) x = 0.0f;
  const float k = round_int(mul(x, 1.44269504f));                // nearest integer to x / ln2
  const float r = sample_fma(k, -1.42860677e-06f, sample_fma(k, -0.693145752f, x));  // x - k·ln2 (two parts)
  float p = 1.98412698e-4f;                                              // 1/5040
  p = sample_fma(p, r, 1.38888889e-3f);                                  // 1/720
  p = sample_fma(p, r, 8.33333333e-3f);                                  // 1/120
  p = sample_fma(p, r, 4.16666667e-2f);                                  // 1/24
  p = sample_fma(p, r, 1.66666667e-1f);                                  // 1/6
  p = sample_fma(p, r, 0.5f);
  p = sample_fma(p, r, 1.0f);
  p = sample_fma(p, r, 1.0f);
  const int ki = int(k);                                                 // in [-126, 0]
  return mul(p, bits_f32(uint32_t(127 + ki) << 23));
}

// The token's weight (step 3 above): exp(s - m) · 2^40 truncated; s <= m.
FLINT_HOST_DEVICE inline uint64_t weight(float s, float m) {
  return uint64_t(mul(sample_exp(sub(s, m)), 1099511627776.0f));  // 2^40, exact scaling
}

// A key whose unsigned order is the order Sampler sorts by: logit descending, then id ascending (larger key
// first). The logit's bits are mapped so that unsigned order is float order; -0 counts as +0 (Sampler compares
// them equal, so their tie goes to the lower id). Logits must not be NaN.
FLINT_HOST_DEVICE inline uint64_t order_key(float logit, int32_t id) {
  const uint32_t b = f32_bits(logit) == 0x80000000u ? 0u : f32_bits(logit);
  const uint32_t k = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (uint64_t(k) << 32) | uint64_t(0xFFFFFFFFu - uint32_t(id));
}

// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the generator of
// cuRAND and of Random123: 4 × 32 random bits per (counter, key).
struct Philox4 {
  uint32_t v[4];
};
FLINT_HOST_DEVICE inline Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                               uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0, p1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0, n1 = uint32_t(p1);
    const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1, n3 = uint32_t(p0);
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// 64 random bits number `draw` of (seed, step).
FLINT_HOST_DEVICE inline uint64_t random64(uint64_t seed, uint64_t step, uint32_t draw) {
  const Philox4 r = philox4x32_10(uint32_t(step), uint32_t(step >> 32), draw, 0x5A4D504Cu, uint32_t(seed),
                                  uint32_t(seed >> 32));
  return (uint64_t(r.v[0]) << 32) | r.v[1];
}

FLINT_HOST_DEVICE inline uint64_t mulhi64(uint64_t a, uint64_t b, uint64_t* lo) {
#ifdef __CUDA_ARCH__
  *lo = a * b;
  return __umul64hi(a, b);
#else
  const unsigned __int128 p = (unsigned __int128)a * b;
  *lo = uint64_t(p);
  return uint64_t(p >> 64);
#endif
}

// u uniform in [0, total), total >= 1: Lemire's multiply-and-reject ("Fast random integer generation in an
// interval", 2019) over the draws 0, 1, 2, ... of (seed, step); a rejection happens with probability
// total / 2^64 (below 2^-6 even at the largest total, 152k · 2^40), so the loop ends at once in practice.
FLINT_HOST_DEVICE inline uint64_t uniform_below(uint64_t total, uint64_t seed, uint64_t step) {
  uint32_t draw = 0;
  uint64_t lo;
  uint64_t hi = mulhi64(random64(seed, step, draw), total, &lo);
  if (lo < total) {
    const uint64_t threshold = (0 - total) % total;
    while (lo < threshold) hi = mulhi64(random64(seed, step, ++draw), total, &lo);
  }
  return hi;
}

}  // namespace sampling
}  // namespace flint
