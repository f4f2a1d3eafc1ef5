// Sampler: picks the next token from a row of logits under a request's
// sampling parameters, with its own seeded generator (same seed, same tokens).
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "kernels/sampling_params.h"

namespace flint {

// Temperatures below this sample greedily (as vLLM's 1e-5): 1 / T would overflow the tempered logits to inf.
constexpr float kGreedyBelowTemperature = 1e-5f;

struct SamplingParams {
  float temperature = 1.0f;         // 0 (or below kGreedyBelowTemperature): greedy
  int32_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // (0, 1]; 1: off
  float min_p = 0.0f;               // [0, 1]; 0: off
  float repetition_penalty = 1.0f;  // > 0; 1: off (divides positive logits, multiplies negative)
  float presence_penalty = 0.0f;    // subtracted once from tokens already generated
  float frequency_penalty = 0.0f;   // subtracted per occurrence in the generated tokens
  uint64_t seed = 0;
  int32_t num_logprobs = 0;         // top-N alternatives to report; 0: none

  // Throws flint::Error naming the first parameter out of range.
  void validate() const;
};

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token_id = 0;
  float logprob = 0.0f;  // of the chosen token under the final (penalised, tempered) distribution
  std::vector<TokenLogprob> top;  // num_logprobs best, highest first
};

// The device sampler's row (kernels/sampling_params.h) for these parameters; `step` keys the draw with the seed
// (the engine passes the sequence's output position, so a request's draws do not depend on its batch).
SampleRow to_sample_row(const SamplingParams& params, uint64_t step);

// The n most likely tokens (highest first, lowest id among equals) with their logprobs under the tempered
// distribution of these (already penalised) logits; temperature 0 reports the untempered one.
std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, float temperature, int32_t n);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // logits (vocab) are modified in place. `context` holds the tokens the
  // repetition penalty looks at (prompt and output); `generated` those the
  // presence and frequency penalties count (output only).
  SampleResult sample(std::span<float> logits, std::span<const int32_t> context,
                      std::span<const int32_t> generated);

  // The tokens the truncation (top-k, min-p, top-p) keeps for these (already penalised) logits, in the order the
  // draw walks them: what sample() draws from when temperature > 0. For tests (the GPU sampler's twin must keep
  // the same set). Consumes no randomness.
  std::vector<int32_t> kept_tokens(std::span<const float> logits);

 private:
  // Sorts order_ and fills probs_ for the candidates sample() draws from; returns how many are kept.
  size_t truncate(std::span<const float> logits, float inv_t, float lse);

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<int32_t> order_;
  std::vector<float> probs_;
};

}  // namespace flint
