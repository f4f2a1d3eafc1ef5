// The client's latency statistics: percentiles as numpy computes them, and a
// stream's TTFT and inter-token gaps from its delta arrivals.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "client/stats.h"

namespace flint::client {
namespace {

TEST(ClientStats, PercentileInterpolatesBetweenClosestRanks) {
  const std::vector<double> v = {10, 20, 30, 40};
  // rank = p/100 * 3; numpy.percentile([10,20,30,40], [0,50,90,99,100]).
  EXPECT_DOUBLE_EQ(percentile(v, 0), 10);
  EXPECT_DOUBLE_EQ(percentile(v, 50), 25);
  EXPECT_DOUBLE_EQ(percentile(v, 90), 37);
  EXPECT_DOUBLE_EQ(percentile(v, 99), 39.7);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 40);
}

TEST(ClientStats, PercentileOfOneValueIsThatValue) {
  const std::vector<double> v = {7.5};
  EXPECT_DOUBLE_EQ(percentile(v, 0), 7.5);
  EXPECT_DOUBLE_EQ(percentile(v, 99), 7.5);
}

TEST(ClientStats, SummarySortsItsInput) {
  std::vector<double> v(101);
  for (size_t i = 0; i < v.size(); ++i) v[i] = double(i);  // 0..100: percentile p is p
  std::shuffle(v.begin(), v.end(), std::mt19937(19));
  Summary s = summarize(v);
  EXPECT_EQ(s.count, 101u);
  EXPECT_DOUBLE_EQ(s.min, 0);
  EXPECT_DOUBLE_EQ(s.max, 100);
  EXPECT_DOUBLE_EQ(s.mean, 50);
  EXPECT_DOUBLE_EQ(s.p50, 50);
  EXPECT_DOUBLE_EQ(s.p90, 90);
  EXPECT_DOUBLE_EQ(s.p99, 99);
}

TEST(ClientStats, SummaryOfNothingIsAllZero) {
  Summary s = summarize({});
  EXPECT_EQ(s.count, 0u);
  EXPECT_EQ(s.p50, 0);
  EXPECT_EQ(s.p99, 0);
}

TEST(ClientStats, TimeToFirstTokenSkipsDeltasWithoutTokens) {
  TokenTimeline t(100.0);
  EXPECT_FALSE(t.ttft_ms());
  t.on_delta(120.0, 0);  // text held back, no tokens
  EXPECT_FALSE(t.ttft_ms());
  t.on_delta(150.0, 1);
  ASSERT_TRUE(t.ttft_ms());
  EXPECT_DOUBLE_EQ(*t.ttft_ms(), 50.0);
  EXPECT_TRUE(t.inter_token_ms().empty());
  EXPECT_FALSE(t.decode_tokens_per_s());
}

TEST(ClientStats, DeltaWithSeveralTokensSplitsItsGapEvenly) {
  TokenTimeline t(0.0);
  t.on_delta(10.0, 2);  // first delta: TTFT only
  t.on_delta(20.0, 1);  // gap 10 over 1 token
  t.on_delta(50.0, 3);  // gap 30 over 3 tokens: three samples of 10
  t.on_delta(55.0, 0);  // ignored
  t.on_delta(61.0, 2);  // gap 11 over 2 tokens
  EXPECT_EQ(t.num_tokens(), 8);
  EXPECT_EQ(t.inter_token_ms(), (std::vector<double>{10, 10, 10, 10, 5.5, 5.5}));
  // 6 tokens after the first delta in 51 ms.
  ASSERT_TRUE(t.decode_tokens_per_s());
  EXPECT_NEAR(*t.decode_tokens_per_s(), 6 / 0.051, 1e-9);
}

}  // namespace
}  // namespace flint::client
