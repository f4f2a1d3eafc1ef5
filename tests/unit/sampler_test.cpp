// Sampler: greedy, truncations, penalties, seeds and logprobs.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/error.h"
#include "engine/sampler.h"

namespace flint {
namespace {

std::vector<float> random_logits(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

int32_t argmax(const std::vector<float>& v) { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); }

TEST(Sampler, GreedyPicksTheLargestLogit) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s(p);
  for (uint32_t seed = 0; seed < 20; ++seed) {
    auto l = random_logits(1000, seed);
    auto copy = l;
    EXPECT_EQ(s.sample(copy, {}, {}).token_id, argmax(l));
  }
}

// 1 / 1e-40 overflows a float: such temperatures sample greedily, on the host and on the device.
TEST(Sampler, ATemperatureBelowTheGreedyThresholdIsGreedy) {
  for (float t : {1e-40f, 1e-30f, 9e-6f}) {
    SamplingParams p;
    p.temperature = t;
    p.seed = 5;
    Sampler s(p);
    for (uint32_t seed = 0; seed < 10; ++seed) {
      auto l = random_logits(1000, seed);
      auto copy = l;
      const SampleResult r = s.sample(copy, {}, {});
      EXPECT_EQ(r.token_id, argmax(l)) << t;
      EXPECT_TRUE(std::isfinite(r.logprob)) << t;
    }
    EXPECT_EQ(to_sample_row(p, 0).temperature, 0.0f) << t;
  }
  SamplingParams warm;
  warm.temperature = 1e-5f;
  EXPECT_EQ(to_sample_row(warm, 0).temperature, 1e-5f);
}

TEST(Sampler, TopKOneMinPOneAndTinyTopPAreGreedy) {
  for (int variant = 0; variant < 3; ++variant) {
    SamplingParams p;
    p.temperature = 1.5f;
    p.seed = 7;
    if (variant == 0) p.top_k = 1;
    if (variant == 1) p.min_p = 1.0f;
    if (variant == 2) p.top_p = 1e-6f;
    Sampler s(p);
    for (uint32_t seed = 0; seed < 20; ++seed) {
      auto l = random_logits(500, seed);
      auto copy = l;
      EXPECT_EQ(s.sample(copy, {}, {}).token_id, argmax(l)) << "variant " << variant;
    }
  }
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  auto run = [](uint64_t seed) {
    SamplingParams p;
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (uint32_t i = 0; i < 50; ++i) {
      auto l = random_logits(300, i);
      out.push_back(s.sample(l, {}, {}).token_id);
    }
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, DrawsFollowTheSoftmaxDistribution) {
  // Logits log(0.5), log(0.3), log(0.2): frequencies within 4 sigma over 20000 draws.
  SamplingParams p;
  p.seed = 1;
  Sampler s(p);
  std::vector<int> counts(3, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
    ++counts[size_t(s.sample(l, {}, {}).token_id)];
  }
  const double want[3] = {0.5, 0.3, 0.2};
  for (int i = 0; i < 3; ++i) {
    double sigma = std::sqrt(want[i] * (1 - want[i]) / n);
    EXPECT_NEAR(counts[size_t(i)] / double(n), want[i], 4 * sigma) << i;
  }
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
  // probs 0.5, 0.3, 0.2: top_p 0.7 keeps {0, 1} only.
  SamplingParams p;
  p.top_p = 0.7f;
  p.seed = 3;
  Sampler s(p);
  for (int i = 0; i < 2000; ++i) {
    std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
    EXPECT_NE(s.sample(l, {}, {}).token_id, 2);
  }
}

TEST(Sampler, PenaltiesLowerRepeatedTokens) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  Sampler rep(p);
  std::vector<float> l = {2.0f, 1.5f, -1.0f};
  std::vector<int32_t> ctx = {0};
  EXPECT_EQ(rep.sample(l, ctx, {}).token_id, 1);  // 2.0 / 2 = 1.0 < 1.5
  EXPECT_FLOAT_EQ(l[0], 1.0f);

  SamplingParams q;
  q.temperature = 0.0f;
  q.presence_penalty = 0.2f;
  q.frequency_penalty = 0.3f;
  Sampler pf(q);
  std::vector<float> l2 = {2.0f, 1.5f, 0.0f};
  std::vector<int32_t> gen = {0, 0};
  EXPECT_EQ(pf.sample(l2, gen, gen).token_id, 1);  // 2.0 - 0.2 - 0.6 = 1.2
  EXPECT_FLOAT_EQ(l2[0], 1.2f);
}

TEST(Sampler, LogprobsAreSortedAndNormalised) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.num_logprobs = 5;
  Sampler s(p);
  auto l = random_logits(100, 9);
  auto copy = l;
  SampleResult r = s.sample(copy, {}, {});
  ASSERT_EQ(r.top.size(), 5u);
  EXPECT_EQ(r.top[0].token_id, r.token_id);
  for (size_t i = 1; i < 5; ++i) EXPECT_GE(r.top[i - 1].logprob, r.top[i].logprob);
  double sum = 0;
  for (float x : l) sum += std::exp(double(x) - double(l[size_t(r.token_id)]) + r.logprob);
  EXPECT_NEAR(sum, 1.0, 1e-4);
}

TEST(Sampler, RejectsParametersOutOfRange) {
  auto bad = [](auto mutate) {
    SamplingParams p;
    mutate(p);
    EXPECT_THROW(p.validate(), Error);
  };
  bad([](SamplingParams& p) { p.temperature = -1; });
  bad([](SamplingParams& p) { p.top_p = 0; });
  bad([](SamplingParams& p) { p.top_p = 1.5f; });
  bad([](SamplingParams& p) { p.min_p = 2; });
  bad([](SamplingParams& p) { p.top_k = -3; });
  bad([](SamplingParams& p) { p.repetition_penalty = 0; });
  bad([](SamplingParams& p) { p.num_logprobs = 100; });
  bad([](SamplingParams& p) { p.temperature = NAN; });
}

}  // namespace
}  // namespace flint
