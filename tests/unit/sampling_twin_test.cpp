// The GPU sampler's CPU twin (kernels/cpu/sampling.h) against engine/sampler: greedy picks the same token, the
// truncation keeps exactly the tokens Sampler keeps, the random draw follows the kept distribution (chi-square),
// penalties change the logits as Sampler's do; and the shared arithmetic (exp, Philox) on known answers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "engine/sampler.h"
#include "kernels/cpu/sampling.h"
#include "test_util.h"

namespace flint::cpu {
namespace {

using test::expect_error;

std::vector<float> random_logits(size_t n, uint32_t seed, float sd = 2.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

SampleRow row_of(const SamplingParams& s, uint64_t step = 0) { return to_sample_row(s, step); }

struct One {  // one row through the twin
  int32_t token = -1;
  float logprob = NAN;
};
One twin_sample(std::vector<float> logits, const SampleRow& row, const PenaltyLists* pen = nullptr) {
  SampleParams p;
  p.num_rows = 1, p.vocab = int(logits.size()), p.logits = logits.data(), p.ld_logits = p.vocab, p.rows = &row;
  if (pen) {
    p.maybe_rep_offsets = pen->rep_offsets.data(), p.rep_ids = pen->rep_ids.data();
    p.maybe_freq_offsets = pen->freq_offsets.data(), p.freq_ids = pen->freq_ids.data();
    p.freq_counts = pen->freq_counts.data();
  }
  One o;
  p.token_ids = &o.token, p.maybe_logprobs = &o.logprob;
  sample(p);
  return o;
}
std::vector<uint8_t> twin_kept(std::vector<float> logits, const SampleRow& row) {
  SampleParams p;
  int32_t tok;
  p.num_rows = 1, p.vocab = int(logits.size()), p.logits = logits.data(), p.ld_logits = p.vocab, p.rows = &row;
  p.token_ids = &tok;
  std::vector<uint8_t> kept;
  sample_kept_tokens(p, 0, &kept);
  return kept;
}

double log_softmax(const std::vector<float>& l, float temperature, int32_t t) {
  const double inv = temperature == 0.0f ? 1.0 : 1.0 / temperature;
  double mx = -INFINITY, sum = 0.0;
  for (float x : l) mx = std::max(mx, x * inv);
  for (float x : l) sum += std::exp(x * inv - mx);
  return l[size_t(t)] * inv - mx - std::log(sum);
}

// ---- the shared arithmetic ---------------------------------------------------------------------------------------

TEST(SamplingMath, ExpIsWithinTwoUlpOfStdExpOnItsDomain) {
  EXPECT_EQ(sampling::sample_exp(0.0f), 1.0f);  // the top token's weight is exactly 2^40
  EXPECT_EQ(sampling::sample_exp(-INFINITY), 0.0f);
  EXPECT_EQ(sampling::sample_exp(NAN), 0.0f);
  EXPECT_EQ(sampling::sample_exp(-100.0f), 0.0f);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-86.9f, 0.0f);
  for (int i = 0; i < 200000; ++i) {
    const float x = i < 1000 ? -float(i) * 1e-4f : d(rng);
    const double want = std::exp(double(x));
    ASSERT_LE(std::fabs(sampling::sample_exp(x) - want), 2.0 * 0x1p-24 * want) << x;
  }
}

TEST(SamplingMath, PhiloxMatchesRandom123KnownAnswers) {
  // Random123's kat_vectors for philox4x32_10.
  auto words = [](sampling::Philox4 r) { return std::vector<uint32_t>(r.v, r.v + 4); };
  EXPECT_EQ(words(sampling::philox4x32_10(0, 0, 0, 0, 0, 0)),
            (std::vector<uint32_t>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(words(sampling::philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u)),
            (std::vector<uint32_t>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(words(sampling::philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u)),
            (std::vector<uint32_t>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(SamplingMath, UniformBelowIsInRangeAndUniform) {
  const uint64_t n = 7;
  std::vector<int> hist(n);
  for (uint64_t step = 0; step < 70000; ++step) {
    const uint64_t u = sampling::uniform_below(n, 12345, step);
    ASSERT_LT(u, n);
    ++hist[u];
  }
  double chi2 = 0.0;
  for (int h : hist) chi2 += (h - 10000.0) * (h - 10000.0) / 10000.0;
  EXPECT_LT(chi2, 27.9);  // chi-square, 6 degrees of freedom, p = 1e-4
  EXPECT_EQ(sampling::uniform_below(1, 1, 1), 0u);
  const uint64_t big = 152064ull << 40;  // the largest total a row can have
  for (uint64_t step = 0; step < 1000; ++step) ASSERT_LT(sampling::uniform_below(big, 9, step), big);
}

// ---- against engine/sampler ------------------------------------------------------------------------------------

TEST(SamplingTwin, GreedyPicksSamplersTokenWithItsLogprob) {
  SamplingParams s;
  s.temperature = 0.0f;
  for (int vocab : {1, 2, 1000, 49152, 151936}) {
    for (uint32_t seed = 0; seed < 5; ++seed) {
      auto l = random_logits(size_t(vocab), seed + 17 * uint32_t(vocab));
      if (seed == 1) for (float& x : l) x = std::round(x);  // many ties: the lowest id must win
      if (seed == 2 && vocab > 2) {  // the largest logits are -0 (id 1) and +0 (ids 2, last): Sampler takes id 1
        for (float& x : l) x = -std::fabs(x) - 1.0f;
        l[1] = -0.0f, l[2] = 0.0f, l[size_t(vocab) - 1] = 0.0f;
      }
      auto copy = l;
      Sampler sampler(s);
      const SampleResult want = sampler.sample(copy, {}, {});
      const One got = twin_sample(l, row_of(s));
      ASSERT_EQ(got.token, want.token_id) << vocab << " " << seed;
      EXPECT_NEAR(got.logprob, want.logprob, 2e-5 + 1e-6 * std::fabs(want.logprob)) << vocab << " " << seed;
    }
  }
}

// A temperature so small that 1 / T overflows (1e-40 is inside the API's [0, 100]) makes every tempered logit
// infinite or NaN and every weight 0: the draw has nothing to cover u, and the twin must pick the top token, as the
// kernel does (its default), not -1.
TEST(SamplingTwin, AllZeroWeightsPickTheTopToken) {
  SamplingParams s;
  s.temperature = 1e-40f;
  for (int32_t top_k : {0, 2})
    for (float top_p : {1.0f, 0.9f}) {
      s.top_k = top_k, s.top_p = top_p;
      const One got = twin_sample({1.0f, 2.0f, -3.0f, 0.5f, 2.0f}, row_of(s, 3));
      EXPECT_EQ(got.token, 1) << "top_k " << top_k << " top_p " << top_p;
    }
}

// The truncation keeps the same set as Sampler's for top-k, top-p, min-p and their combinations.
TEST(SamplingTwin, FiltersKeepExactlySamplersTokens) {
  struct Case {
    float temperature;
    int32_t top_k;
    float top_p, min_p;
  };
  const Case cases[] = {{1.0f, 40, 1.0f, 0.0f},  {0.7f, 0, 0.9f, 0.0f},   {1.3f, 0, 1.0f, 0.05f},
                        {0.8f, 50, 0.95f, 0.0f}, {1.0f, 100, 0.8f, 0.02f}, {0.5f, 0, 0.5f, 0.1f},
                        {1.0f, 1, 1.0f, 0.0f},   {2.0f, 0, 0.999f, 0.0f},  {1.0f, 5000, 0.97f, 0.001f}};
  int total_kept = 0;
  for (const Case& c : cases) {
    for (int vocab : {7, 1000, 49152}) {
      for (uint32_t seed = 0; seed < 4; ++seed) {
        SamplingParams s;
        s.temperature = c.temperature, s.top_k = c.top_k, s.top_p = c.top_p, s.min_p = c.min_p;
        auto l = random_logits(size_t(vocab), seed * 31 + uint32_t(vocab), seed == 3 ? 0.3f : 2.0f);
        if (seed == 2) for (float& x : l) x = std::round(x * 4.0f) / 4.0f;  // ties across the cut
        Sampler sampler(s);
        const auto want_list = sampler.kept_tokens(l);
        std::vector<uint8_t> want(static_cast<size_t>(vocab), 0);
        for (int32_t t : want_list) want[size_t(t)] = 1;
        const auto got = twin_kept(l, row_of(s));
        int diff = 0;
        for (int i = 0; i < vocab; ++i) diff += got[size_t(i)] != want[size_t(i)];
        EXPECT_EQ(diff, 0) << "T " << c.temperature << " top_k " << c.top_k << " top_p " << c.top_p << " min_p "
                           << c.min_p << " vocab " << vocab << " seed " << seed << ": Sampler keeps "
                           << want_list.size();
        total_kept += int(want_list.size());
      }
    }
  }
  EXPECT_GT(total_kept, 1000);  // the cases do keep many tokens, not just the top one
}

// Frequencies over many draws match the kept distribution (weights / kept total) within a chi-square bound, and
// so do Sampler's on the same logits: both draw from the same distribution.
TEST(SamplingTwin, DrawsFollowTheKeptDistribution) {
  const int vocab = 50, draws = 40000;
  const auto l = random_logits(size_t(vocab), 77, 1.0f);
  SamplingParams s;
  s.temperature = 0.8f, s.top_k = 30, s.top_p = 0.95f, s.min_p = 0.01f, s.seed = 5;
  Sampler probe(s);
  const auto kept = probe.kept_tokens(l);
  ASSERT_GT(kept.size(), 5u);
  std::vector<double> p(static_cast<size_t>(vocab), 0.0);
  double z = 0.0;
  for (int32_t t : kept) z += p[size_t(t)] = std::exp(double(l[size_t(t)]) / 0.8 - double(l[size_t(kept[0])]) / 0.8);
  for (double& x : p) x /= z;
  auto chi2 = [&](const std::vector<int>& hist) {
    double c = 0.0;
    for (int i = 0; i < vocab; ++i) {
      if (p[size_t(i)] == 0.0) {
        EXPECT_EQ(hist[size_t(i)], 0) << "token " << i << " is not kept but was drawn";
        continue;
      }
      const double e = p[size_t(i)] * draws;
      c += (hist[size_t(i)] - e) * (hist[size_t(i)] - e) / e;
    }
    return c;
  };
  std::vector<int> twin_hist(static_cast<size_t>(vocab)), sampler_hist(static_cast<size_t>(vocab));
  Sampler sampler(s);
  for (int i = 0; i < draws; ++i) {
    SampleRow row = row_of(s, uint64_t(i));
    ++twin_hist[size_t(twin_sample(l, row).token)];
    auto copy = l;
    ++sampler_hist[size_t(sampler.sample(copy, {}, {}).token_id)];
  }
  // Chi-square with kept - 1 degrees of freedom: mean df, sd sqrt(2 df); 6 sd above is p < 1e-6.
  const double df = double(kept.size() - 1), bound = df + 6.0 * std::sqrt(2.0 * df);
  EXPECT_LT(chi2(twin_hist), bound);
  EXPECT_LT(chi2(sampler_hist), bound);
}

TEST(SamplingTwin, SameSeedAndStepSameTokenAndStepsVary) {
  const auto l = random_logits(1000, 8, 0.5f);
  SamplingParams s;
  s.temperature = 1.0f, s.seed = 99;
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 50; ++step) {
    const int32_t a = twin_sample(l, row_of(s, step)).token, b = twin_sample(l, row_of(s, step)).token;
    ASSERT_EQ(a, b);
    seen.insert(a);
  }
  EXPECT_GT(seen.size(), 20u);  // a flat distribution over 1000 tokens: 50 steps draw many different tokens
}

TEST(SamplingTwin, LogprobIsTheChosenTokensLogSoftmax) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const auto l = random_logits(5000, seed + 300);
    SamplingParams s;
    s.temperature = 0.6f + 0.1f * float(seed % 5), s.top_p = 0.9f, s.seed = seed;
    const One o = twin_sample(l, row_of(s, seed));
    EXPECT_NEAR(o.logprob, log_softmax(l, s.temperature, o.token), 5e-6 * (1.0 + std::fabs(o.logprob)));
  }
}

TEST(SamplingTwin, PenaltiesChangeTheLogitsAsSamplersDo) {
  const int vocab = 500;
  const auto l = random_logits(size_t(vocab), 41);
  const std::vector<int32_t> prompt = {3, 3, 17, 250, -5, 499, 700}, output = {17, 17, 17, 42, 3, 600};
  std::vector<int32_t> context = prompt;
  context.insert(context.end(), output.begin(), output.end());
  SamplingParams s;
  s.temperature = 0.0f, s.repetition_penalty = 1.3f, s.presence_penalty = 0.4f, s.frequency_penalty = 0.7f;
  PenaltyLists pen;
  pen.add_row(context, output, vocab);
  EXPECT_EQ(pen.rep_ids, (std::vector<int32_t>{3, 17, 250, 499, 42}));
  EXPECT_EQ(pen.freq_ids, (std::vector<int32_t>{17, 42, 3}));
  EXPECT_EQ(pen.freq_counts, (std::vector<int32_t>{3, 1, 1}));
  auto want = l;
  Sampler sampler(s);
  const int32_t want_token = sampler.sample(want, context, output).token_id;
  auto got = l;
  SampleParams p;
  const SampleRow row = row_of(s);
  int32_t token = -1;
  p.num_rows = 1, p.vocab = vocab, p.logits = got.data(), p.ld_logits = vocab, p.rows = &row, p.token_ids = &token;
  p.maybe_rep_offsets = pen.rep_offsets.data(), p.rep_ids = pen.rep_ids.data();
  p.maybe_freq_offsets = pen.freq_offsets.data(), p.freq_ids = pen.freq_ids.data(), p.freq_counts = pen.freq_counts.data();
  sample(p);
  // Sampler's build may fuse frequency · count + presence into one rounding: one ulp apart at most.
  for (int i = 0; i < vocab; ++i) ASSERT_NEAR(got[size_t(i)], want[size_t(i)], 1e-6f * (1.0f + std::fabs(want[size_t(i)]))) << i;
  for (int i : {3, 17, 250, 499, 42}) EXPECT_NE(got[size_t(i)], l[size_t(i)]) << i;
  EXPECT_EQ(got[100], l[100]);
  EXPECT_EQ(token, want_token);
}

TEST(SamplingTwin, SamplesEveryRowWithItsOwnParameters) {
  const int vocab = 300, rows = 5;
  std::vector<float> logits;
  for (int r = 0; r < rows; ++r) {
    const auto l = random_logits(size_t(vocab), 500 + uint32_t(r));
    logits.insert(logits.end(), l.begin(), l.end());
    logits.insert(logits.end(), 4, NAN);  // padding: ld_logits = vocab + 4 is never read
  }
  std::vector<SampleRow> row_params(static_cast<size_t>(rows));
  row_params[0].temperature = 0.0f;
  row_params[1].top_k = 1;
  row_params[2].top_p = 0.3f, row_params[2].seed = 4;
  row_params[3].min_p = 0.5f, row_params[3].temperature = 0.3f;
  row_params[4].seed = 8, row_params[4].step = 3;
  std::vector<int32_t> tokens(static_cast<size_t>(rows), -1);
  std::vector<float> logprobs(static_cast<size_t>(rows));
  auto batch = logits;
  SampleParams p;
  p.num_rows = rows, p.vocab = vocab, p.logits = batch.data(), p.ld_logits = vocab + 4, p.rows = row_params.data();
  p.token_ids = tokens.data(), p.maybe_logprobs = logprobs.data();
  sample(p);
  for (int r = 0; r < rows; ++r) {
    const std::vector<float> l(logits.begin() + r * (vocab + 4), logits.begin() + r * (vocab + 4) + vocab);
    const One one = twin_sample(l, row_params[size_t(r)]);
    EXPECT_EQ(tokens[size_t(r)], one.token) << r;
    EXPECT_EQ(logprobs[size_t(r)], one.logprob) << r;
  }
  const std::vector<float> l0(logits.begin(), logits.begin() + vocab);
  EXPECT_EQ(tokens[0], int32_t(std::max_element(l0.begin(), l0.end()) - l0.begin()));
  const std::vector<float> l1(logits.begin() + vocab + 4, logits.begin() + 2 * vocab + 4);
  EXPECT_EQ(tokens[1], int32_t(std::max_element(l1.begin(), l1.end()) - l1.begin()));
}

TEST(SamplingTwin, ToSampleRowCarriesEveryParameterAndTheStep) {
  SamplingParams s;
  s.temperature = 0.7f, s.top_k = 12, s.top_p = 0.8f, s.min_p = 0.05f, s.repetition_penalty = 1.3f;
  s.presence_penalty = -0.5f, s.frequency_penalty = 1.5f, s.seed = 0x1234567890ull, s.num_logprobs = 4;
  const SampleRow r = to_sample_row(s, 77);
  EXPECT_EQ(r.temperature, 0.7f);
  EXPECT_EQ(r.top_k, 12);
  EXPECT_EQ(r.top_p, 0.8f);
  EXPECT_EQ(r.min_p, 0.05f);
  EXPECT_EQ(r.repetition_penalty, 1.3f);
  EXPECT_EQ(r.presence_penalty, -0.5f);
  EXPECT_EQ(r.frequency_penalty, 1.5f);
  EXPECT_EQ(r.seed, 0x1234567890ull);
  EXPECT_EQ(r.step, 77u);
  EXPECT_EQ(r.reserved, 0u);
}

// SampleBatch (what the engine hands a device that samples): a row's lists hold only what its penalties use, and
// sampling the batch gives each row what the twin gives it alone with its own lists.
TEST(SampleBatch, ListsOnlyWhatEachRowsPenaltiesUseAndSamplesEveryRowAsAlone) {
  const int32_t vocab = 200;
  const std::vector<int32_t> context = {5, 9, 5, 300, 17, 9, 42}, generated = {17, 9, 42, 42};
  SamplingParams plain, rep, freq;
  plain.temperature = 0.0f;
  rep.repetition_penalty = 1.8f, rep.seed = 3;
  freq.presence_penalty = 0.7f, freq.frequency_penalty = 0.4f, freq.seed = 4, freq.top_k = 30;
  SampleBatch batch;
  batch.add_row(row_of(plain), context, generated, vocab);
  batch.add_row(row_of(rep, 2), context, generated, vocab);
  batch.add_row(row_of(freq, 5), context, generated, vocab);
  const PenaltyLists& pl = batch.penalties;
  EXPECT_EQ(pl.rep_offsets, (std::vector<int32_t>{0, 0, 4, 4}));
  EXPECT_EQ(pl.rep_ids, (std::vector<int32_t>{5, 9, 17, 42}));  // distinct, first seen first; 300 is outside
  EXPECT_EQ(pl.freq_offsets, (std::vector<int32_t>{0, 0, 0, 3}));
  EXPECT_EQ(pl.freq_ids, (std::vector<int32_t>{17, 9, 42}));
  EXPECT_EQ(pl.freq_counts, (std::vector<int32_t>{1, 1, 2}));

  std::vector<float> logits;
  for (int r = 0; r < 3; ++r) {
    const auto l = random_logits(size_t(vocab), 700 + uint32_t(r));
    logits.insert(logits.end(), l.begin(), l.end());
  }
  auto work = logits;
  int32_t tokens[3];
  float logprobs[3];
  sample(batch.host_params(work.data(), vocab, vocab, tokens, logprobs));
  for (int r = 0; r < 3; ++r) {
    PenaltyLists own;
    own.add_row(context, generated, vocab);
    const One one = twin_sample(std::vector<float>(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab),
                                batch.rows[size_t(r)], &own);
    EXPECT_EQ(tokens[r], one.token) << r;
    EXPECT_EQ(logprobs[r], one.logprob) << r;
  }
  EXPECT_EQ(tokens[0], int32_t(std::max_element(logits.begin(), logits.begin() + vocab) - logits.begin()));

  SampleBatch none;  // no penalties anywhere: no lists handed over
  none.add_row(row_of(plain), context, generated, vocab);
  const SampleParams p = none.host_params(work.data(), vocab, vocab, tokens, logprobs);
  EXPECT_EQ(p.maybe_rep_offsets, nullptr);
  EXPECT_EQ(p.maybe_freq_offsets, nullptr);
  none.clear();
  EXPECT_EQ(none.num_rows(), 0);
  EXPECT_EQ(none.penalties.rep_offsets, (std::vector<int32_t>{0}));
}

TEST(SamplingTwin, RejectsBadArguments) {
  std::vector<float> l(10, 0.5f);
  SampleRow row;
  int32_t tok;
  SampleParams p;
  p.num_rows = 1, p.vocab = 10, p.logits = l.data(), p.ld_logits = 10, p.rows = &row, p.token_ids = &tok;
  sample(p);
  auto bad = p;
  bad.vocab = 0;
  expect_error([&] { sample(bad); }, {"sampling", "vocab = 0"});
  bad = p, bad.ld_logits = 9;
  expect_error([&] { sample(bad); }, {"ld_logits = 9"});
  bad = p, bad.token_ids = nullptr;
  expect_error([&] { sample(bad); }, {"must not be null"});
  int32_t offsets[2] = {0, 0};
  bad = p, bad.maybe_rep_offsets = offsets;
  expect_error([&] { sample(bad); }, {"rep_ids"});
  SampleRow bad_row;
  bad_row.top_p = 0.0f;
  bad = p, bad.rows = &bad_row;
  expect_error([&] { sample(bad); }, {"row 0", "top_p"});
  bad_row = SampleRow{}, bad_row.temperature = -1.0f;
  expect_error([&] { sample(bad); }, {"temperature"});
  bad_row = SampleRow{}, bad_row.frequency_penalty = 3.0f;
  expect_error([&] { sample(bad); }, {"frequency_penalty"});
  bad_row = SampleRow{}, bad_row.top_k = -2;
  expect_error([&] { sample(bad); }, {"top_k"});
}

}  // namespace
}  // namespace flint::cpu
