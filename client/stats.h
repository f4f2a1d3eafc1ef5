// Latency statistics for `flint bench` and `flint generate -v`: percentiles,
// and the time to first token and inter-token gaps of one stream. Plain
// numbers in, no gRPC: unit-tested in tests/unit/client_stats_test.cpp.
#pragma once
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

namespace flint::client {

// The p-th percentile (p in [0, 100]) of ascending values, interpolating
// linearly between closest ranks (numpy's default): rank = p/100 * (n - 1).
// PRECOND: sorted is non-empty and ascending.
double percentile(std::span<const double> sorted, double p);

struct Summary {
  size_t count = 0;  // 0: the other fields are 0
  double mean = 0, min = 0, max = 0, p50 = 0, p90 = 0, p99 = 0;
};
Summary summarize(std::vector<double> values);

// One stream's token arrivals, in milliseconds on one clock. A delta carrying
// k tokens, arriving g ms after the previous token-carrying delta, gives k
// inter-token samples of g / k: tokens are weighted alike however the server
// groups them. The first delta's tokens give the time to first token only.
class TokenTimeline {
 public:
  explicit TokenTimeline(double start_ms) : start_ms_(start_ms) {}

  void on_delta(double t_ms, int num_tokens);  // deltas without tokens are ignored

  std::optional<double> ttft_ms() const;  // none before the first token
  const std::vector<double>& inter_token_ms() const { return inter_token_ms_; }
  int num_tokens() const { return num_tokens_; }
  // Tokens after the first delta over the time since it; none without two deltas.
  std::optional<double> decode_tokens_per_s() const;

 private:
  double start_ms_;
  std::optional<double> first_ms_, last_ms_;
  int num_tokens_ = 0, num_first_tokens_ = 0;
  std::vector<double> inter_token_ms_;
};

}  // namespace flint::client
