// Percentiles and per-stream token timing.
#include "client/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace flint::client {

double percentile(std::span<const double> sorted, double p) {
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * double(sorted.size() - 1);
  const size_t lo = size_t(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - double(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

Summary summarize(std::vector<double> values) {
  Summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.count = values.size();
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / double(values.size());
  s.min = values.front();
  s.max = values.back();
  s.p50 = percentile(values, 50);
  s.p90 = percentile(values, 90);
  s.p99 = percentile(values, 99);
  return s;
}

void TokenTimeline::on_delta(double t_ms, int num_tokens) {
  if (num_tokens <= 0) return;
  if (!first_ms_) {
    first_ms_ = t_ms;
    num_first_tokens_ = num_tokens;
  } else {
    const double per_token = (t_ms - *last_ms_) / num_tokens;
    inter_token_ms_.insert(inter_token_ms_.end(), size_t(num_tokens), per_token);
  }
  last_ms_ = t_ms;
  num_tokens_ += num_tokens;
}

std::optional<double> TokenTimeline::ttft_ms() const {
  if (!first_ms_) return std::nullopt;
  return *first_ms_ - start_ms_;
}

std::optional<double> TokenTimeline::decode_tokens_per_s() const {
  if (!first_ms_ || *last_ms_ <= *first_ms_) return std::nullopt;
  return (num_tokens_ - num_first_tokens_) / ((*last_ms_ - *first_ms_) / 1000.0);
}

}  // namespace flint::client
