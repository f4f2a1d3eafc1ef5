// Sampling: penalties, temperature, top-k / top-p / min-p truncation, then a
// draw from the seeded generator; logprobs from the same distribution.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "common/error.h"

namespace flint {

void SamplingParams::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) fail("temperature ", temperature, " must be >= 0");
  if (top_k < 0) fail("top_k ", top_k, " must be >= 0");
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("top_p ", top_p, " must be in (0, 1]");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) fail("min_p ", min_p, " must be in [0, 1]");
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) fail("repetition_penalty ", repetition_penalty, " must be > 0");
  if (!std::isfinite(presence_penalty) || std::fabs(presence_penalty) > 2.0f) fail("presence_penalty ", presence_penalty, " must be in [-2, 2]");
  if (!std::isfinite(frequency_penalty) || std::fabs(frequency_penalty) > 2.0f) fail("frequency_penalty ", frequency_penalty, " must be in [-2, 2]");
  if (num_logprobs < 0 || num_logprobs > 20) fail("num_logprobs ", num_logprobs, " must be in [0, 20]");
}

namespace {
// Log-sum-exp of the tempered logits (the distribution logprobs report).
float tempered_lse(std::span<const float> logits, float inv_t) {
  float mx = -INFINITY;
  for (float l : logits) mx = std::max(mx, l * inv_t);
  double sum = 0.0;
  for (float l : logits) sum += std::exp(double(l * inv_t - mx));
  return mx + float(std::log(sum));
}
}  // namespace

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  params_.validate();
  if (params_.temperature < kGreedyBelowTemperature) params_.temperature = 0.0f;
}

size_t Sampler::truncate(std::span<const float> logits, float inv_t, float lse) {
  const int32_t vocab = int32_t(logits.size());
  auto logprob = [&](int32_t t) { return logits[size_t(t)] * inv_t - lse; };
  // Candidates sorted by logit (ties by id), truncated by top-k, top-p, min-p.
  order_.resize(size_t(vocab));
  std::iota(order_.begin(), order_.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  };
  size_t keep = size_t(vocab);
  if (params_.top_k > 0 && params_.top_k < vocab) {
    keep = size_t(params_.top_k);
    std::partial_sort(order_.begin(), order_.begin() + long(keep), order_.end(), by_logit);
  } else {
    std::sort(order_.begin(), order_.end(), by_logit);
  }
  probs_.resize(keep);
  for (size_t i = 0; i < keep; ++i) probs_[i] = std::exp(logprob(order_[i]));
  if (params_.min_p > 0.0f) {
    const float floor = params_.min_p * probs_[0];
    size_t k = 1;
    while (k < keep && probs_[k] >= floor) ++k;
    keep = k;
  }
  if (params_.top_p < 1.0f) {
    double kept_mass = 0.0, total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += probs_[i];
    size_t k = 0;
    while (k < keep && kept_mass < params_.top_p * total) kept_mass += probs_[k++];
    keep = std::max<size_t>(k, 1);
  }
  return keep;
}

std::vector<int32_t> Sampler::kept_tokens(std::span<const float> logits) {
  if (logits.empty()) fail("sampler: empty logits");
  const float inv_t = params_.temperature == 0.0f ? 1.0f : 1.0f / params_.temperature;
  const float lse = tempered_lse(logits, inv_t);
  if (params_.temperature == 0.0f)
    return {int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin())};
  const size_t keep = truncate(logits, inv_t, lse);
  return std::vector<int32_t>(order_.begin(), order_.begin() + long(keep));
}

SampleResult Sampler::sample(std::span<float> logits, std::span<const int32_t> context,
                             std::span<const int32_t> generated) {
  const int32_t vocab = int32_t(logits.size());
  if (vocab == 0) fail("sampler: empty logits");
  // Penalties (as in HF / vLLM): repetition over context, presence and frequency over output.
  if (params_.repetition_penalty != 1.0f) {
    std::vector<bool> seen(static_cast<size_t>(vocab), false);
    for (int32_t t : context) {
      if (t < 0 || t >= vocab || seen[size_t(t)]) continue;
      seen[size_t(t)] = true;
      float& l = logits[size_t(t)];
      l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    }
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int32_t> counts;
    for (int32_t t : generated)
      if (t >= 0 && t < vocab) ++counts[t];
    for (auto [t, c] : counts)
      logits[size_t(t)] -= params_.presence_penalty + params_.frequency_penalty * float(c);
  }

  const bool greedy = params_.temperature == 0.0f;
  const float inv_t = greedy ? 1.0f : 1.0f / params_.temperature;
  // Log-softmax of the tempered logits (the distribution logprobs report).
  const float lse = tempered_lse(logits, inv_t);
  auto logprob = [&](int32_t t) { return logits[size_t(t)] * inv_t - lse; };

  SampleResult result;
  if (greedy) {
    // Lowest id among equal maxima: deterministic.
    result.token_id = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  } else {
    const size_t keep = truncate(logits, inv_t, lse);
    double total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += probs_[i];
    const double u = std::uniform_real_distribution<double>(0.0, total)(rng_);
    double acc = 0.0;
    result.token_id = order_[keep - 1];
    for (size_t i = 0; i < keep; ++i) {
      acc += probs_[i];
      if (u < acc) {
        result.token_id = order_[i];
        break;
      }
    }
  }
  result.logprob = logprob(result.token_id);
  if (params_.num_logprobs > 0) result.top = top_logprobs(logits, params_.temperature, params_.num_logprobs);
  return result;
}

std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, float temperature, int32_t n) {
  if (logits.empty() || n <= 0) return {};
  const float inv_t = temperature == 0.0f ? 1.0f : 1.0f / temperature;
  const float lse = tempered_lse(logits, inv_t);
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  const size_t k = std::min(size_t(n), logits.size());
  std::partial_sort(ids.begin(), ids.begin() + long(k), ids.end(), [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  });
  std::vector<TokenLogprob> top;
  for (size_t i = 0; i < k; ++i) top.push_back({ids[i], logits[size_t(ids[i])] * inv_t - lse});
  return top;
}

SampleRow to_sample_row(const SamplingParams& params, uint64_t step) {
  SampleRow row;
  row.temperature = params.temperature < kGreedyBelowTemperature ? 0.0f : params.temperature;
  row.top_k = params.top_k;
  row.top_p = params.top_p;
  row.min_p = params.min_p;
  row.repetition_penalty = params.repetition_penalty;
  row.presence_penalty = params.presence_penalty;
  row.frequency_penalty = params.frequency_penalty;
  row.seed = params.seed;
  row.step = step;
  return row;
}

}  // namespace flint
