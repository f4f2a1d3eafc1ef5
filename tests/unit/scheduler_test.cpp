// Scheduler tests: step composition (decodes first, chunked prefill, budgets),
// priority, preemption by recompute (also of lower-priority runners by a
// higher-priority arrival), tokens appended to a running sequence, removal, and
// an end-to-end run on the tiny model proving that batching, chunking,
// preemption and prefix reuse are exact.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "engine/offline_runner.h"
#include "model/cpu_backend.h"
#include "model/model_loader.h"
#include "test_util.h"

namespace flint {
namespace {

using test::iota_tokens;

int32_t num_new_tokens(const ScheduledStep& step, size_t s) {
  return step.plan.cu_seqlens[s + 1] - step.plan.cu_seqlens[s];
}

// Runs the step with a fake model: sequence id * 1000 + its output count as the sample.
void fake_forward(Scheduler& sched, const ScheduledStep& step) {
  std::vector<int32_t> sampled;
  for (SeqId id : step.logit_seq_ids) sampled.push_back(int32_t(id) * 1000 + sched.find(id)->num_output_tokens());
  sched.postprocess(step, sampled);
}

TEST(Scheduler, ChunkedPrefillSplitsALongPromptAcrossStepsWithinTheTokenBudget) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 8}, {.num_blocks = 16, .block_size = 4});
  const std::vector<int32_t> prompt = iota_tokens(10, 20);
  const SeqId id = sched.add(prompt);
  std::vector<int32_t> fed;
  for (int32_t expect : {8, 8, 4}) {
    ScheduledStep step = sched.schedule();
    step.plan.validate(4, 16);
    ASSERT_EQ(step.seq_ids, std::vector<SeqId>{id});
    ASSERT_EQ(step.plan.num_tokens(), expect);
    EXPECT_EQ(step.plan.positions.front(), int32_t(fed.size()));
    fed.insert(fed.end(), step.plan.token_ids.begin(), step.plan.token_ids.end());
    EXPECT_EQ(step.plan.kv_lens[0], int32_t(fed.size()));
    // Logits only once the last prompt token is in the step.
    EXPECT_EQ(step.logit_seq_ids.size(), fed.size() == prompt.size() ? 1u : 0u);
    fake_forward(sched, step);
  }
  EXPECT_EQ(fed, prompt);
  EXPECT_EQ(sched.find(id)->num_output_tokens(), 1);
  ScheduledStep decode = sched.schedule();
  ASSERT_EQ(decode.plan.num_tokens(), 1);
  EXPECT_EQ(decode.plan.token_ids[0], int32_t(id) * 1000);
  EXPECT_EQ(decode.plan.positions[0], 20);
  EXPECT_EQ(decode.plan.logit_rows, std::vector<int32_t>{0});
}

TEST(Scheduler, DecodesAreScheduledBeforeNewPrefills) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 6}, {.num_blocks = 16, .block_size = 4});
  const SeqId a = sched.add(iota_tokens(0, 4));
  fake_forward(sched, sched.schedule());
  const SeqId b = sched.add(iota_tokens(50, 10));
  const SeqId c = sched.add(iota_tokens(70, 3));
  ScheduledStep step = sched.schedule();
  ASSERT_EQ(step.seq_ids, (std::vector<SeqId>{a, b}));  // c waits: the budget is spent
  EXPECT_EQ(num_new_tokens(step, 0), 1);
  EXPECT_EQ(num_new_tokens(step, 1), 5);
  EXPECT_EQ(step.logit_seq_ids, std::vector<SeqId>{a});
  fake_forward(sched, step);
  step = sched.schedule();  // a's decode, then b's running prefill, then c
  ASSERT_EQ(step.seq_ids, (std::vector<SeqId>{a, b}));
  EXPECT_EQ(num_new_tokens(step, 1), 5);
  EXPECT_EQ(sched.find(c)->status(), SequenceStatus::Waiting);
}

TEST(Scheduler, HigherPriorityAdmittedFirst) {
  // Room for one sequence's blocks at a time.
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 64}, {.num_blocks = 2, .block_size = 4});
  const SeqId low = sched.add(iota_tokens(0, 6), /*priority=*/0);
  const SeqId early = sched.add(iota_tokens(10, 6), /*priority=*/5);
  const SeqId late = sched.add(iota_tokens(20, 6), /*priority=*/5);
  std::vector<SeqId> order;
  while (sched.has_unfinished()) {
    ScheduledStep step = sched.schedule();
    ASSERT_EQ(step.seq_ids.size(), 1u);
    order.push_back(step.seq_ids[0]);
    fake_forward(sched, step);
    sched.remove(step.seq_ids[0]);
  }
  EXPECT_EQ(order, (std::vector<SeqId>{early, late, low}));
}

TEST(Scheduler, PreemptedSequenceResumesAndItsPlanRecomputesPromptPlusGeneratedTokens) {
  // Six blocks of 4: two prompts of 9 tokens take three each; the first decode
  // that needs a fourth block preempts the later arrival.
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 64}, {.num_blocks = 6, .block_size = 4});
  const SeqId a = sched.add(iota_tokens(0, 9));
  const SeqId b = sched.add(iota_tokens(100, 9));
  int32_t preempted = 0;
  while (preempted == 0) {
    ScheduledStep step = sched.schedule();
    preempted += step.num_preempted;
    if (preempted) {
      EXPECT_EQ(step.seq_ids, std::vector<SeqId>{a});
    }
    fake_forward(sched, step);
  }
  const Sequence& victim = *sched.find(b);
  EXPECT_EQ(victim.status(), SequenceStatus::Waiting);
  EXPECT_EQ(victim.num_preemptions(), 1);
  EXPECT_TRUE(victim.block_table().empty());
  const std::vector<int32_t> kept(victim.token_ids().begin(), victim.token_ids().end());
  // 9 + 3 tokens filled its three blocks; the fourth sample needed a new one.
  ASSERT_EQ(victim.num_output_tokens(), 4);
  EXPECT_EQ(kept.back(), int32_t(b) * 1000 + 3);

  sched.remove(a);  // frees the room
  ScheduledStep step = sched.schedule();
  ASSERT_EQ(step.seq_ids, std::vector<SeqId>{b});
  // Whatever its own freed blocks still hold in the prefix cache is skipped;
  // the rest of prompt + output is fed again, and its last token samples.
  const int32_t cached = victim.num_cached_tokens();
  EXPECT_EQ(cached % 4, 0);
  EXPECT_EQ(step.plan.token_ids, std::vector<int32_t>(kept.begin() + cached, kept.end()));
  EXPECT_EQ(step.plan.positions.front(), cached);
  EXPECT_EQ(step.plan.kv_lens[0], 13);
  EXPECT_EQ(step.logit_seq_ids, std::vector<SeqId>{b});
  fake_forward(sched, step);
  EXPECT_EQ(sched.find(b)->num_output_tokens(), 5);
}

TEST(Scheduler, PreemptionTakesTheLowestPriorityThenLatestArrived) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 64}, {.num_blocks = 4, .block_size = 4});
  const SeqId high = sched.add(iota_tokens(0, 4), 9);
  const SeqId low_early = sched.add(iota_tokens(10, 4), 1);
  const SeqId low_late = sched.add(iota_tokens(20, 4), 1);
  const SeqId mid = sched.add(iota_tokens(30, 4), 5);
  fake_forward(sched, sched.schedule());  // all four prefilled, one block each, cache full
  ScheduledStep step = sched.schedule();  // every decode needs a fifth token's block
  EXPECT_EQ(sched.find(low_late)->status(), SequenceStatus::Waiting);
  EXPECT_EQ(sched.find(low_early)->status(), SequenceStatus::Waiting);
  EXPECT_EQ(step.seq_ids, (std::vector<SeqId>{high, mid}));
  EXPECT_EQ(step.num_preempted, 2);
}

TEST(Scheduler, TokensAppendedToARunningSequenceAreFedAsOneChunkWithLogitsForTheLast) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 64}, {.num_blocks = 8, .block_size = 4});
  const SeqId id = sched.add(iota_tokens(0, 5));
  fake_forward(sched, sched.schedule());  // 5 prompt tokens in the cache, one sampled
  Sequence& seq = *sched.find(id);
  for (int32_t t : {90, 91, 92, 93}) seq.append_token(t);  // e.g. a forced think_end
  ScheduledStep step = sched.schedule();
  step.plan.validate(4, 8);
  ASSERT_EQ(step.seq_ids, std::vector<SeqId>{id});
  EXPECT_EQ(step.plan.token_ids, (std::vector<int32_t>{int32_t(id) * 1000, 90, 91, 92, 93}));
  EXPECT_EQ(step.plan.positions.front(), 5);
  EXPECT_EQ(step.plan.kv_lens[0], 10);
  EXPECT_EQ(step.plan.logit_rows, std::vector<int32_t>{4});
  EXPECT_EQ(seq.block_table().num_blocks(), 3);
  fake_forward(sched, step);
  EXPECT_EQ(seq.num_computed_tokens(), 10);
  EXPECT_EQ(seq.num_uncomputed_tokens(), 1);
  sched.block_manager().check_invariants();
}

TEST(Scheduler, AppendedTokensBeyondTheTokenBudgetAreFedOverTwoSteps) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 3}, {.num_blocks = 8, .block_size = 4});
  const SeqId id = sched.add(iota_tokens(0, 3));
  fake_forward(sched, sched.schedule());
  for (int32_t t : {90, 91, 92, 93}) sched.find(id)->append_token(t);
  ScheduledStep first = sched.schedule();
  EXPECT_EQ(first.plan.num_tokens(), 3);
  EXPECT_TRUE(first.logit_seq_ids.empty());
  fake_forward(sched, first);
  ScheduledStep second = sched.schedule();
  EXPECT_EQ(second.plan.token_ids, (std::vector<int32_t>{92, 93}));
  EXPECT_EQ(second.logit_seq_ids, std::vector<SeqId>{id});
}

TEST(Scheduler, AHigherPriorityArrivalPreemptsALowerPriorityRunnerWhenBlocksAreShort) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 64}, {.num_blocks = 4, .block_size = 4});
  const SeqId low = sched.add(iota_tokens(0, 9), /*priority=*/0);  // three blocks
  fake_forward(sched, sched.schedule());
  const SeqId high = sched.add(iota_tokens(50, 6), /*priority=*/5);  // needs two, one is free
  ScheduledStep step = sched.schedule();
  EXPECT_EQ(step.num_preempted, 1);
  EXPECT_EQ(step.seq_ids, std::vector<SeqId>{high});
  EXPECT_EQ(step.plan.token_ids, iota_tokens(50, 6));
  EXPECT_EQ(sched.find(low)->status(), SequenceStatus::Waiting);
  EXPECT_EQ(sched.find(low)->num_output_tokens(), 1);  // kept for the recompute
  // The runner goes on; the preempted one waits behind it and is not a threat to it.
  for (int i = 0; i < 3; ++i) {
    fake_forward(sched, step);
    step = sched.schedule();
    EXPECT_EQ(step.num_preempted, 0);
    EXPECT_EQ(step.seq_ids, std::vector<SeqId>{high});
  }
  sched.remove(high);
  step = sched.schedule();
  EXPECT_EQ(step.seq_ids, std::vector<SeqId>{low});
  EXPECT_EQ(step.plan.kv_lens[0], 10);  // prompt and its sampled token again
  sched.block_manager().check_invariants();
}

TEST(Scheduler, AnEqualPriorityArrivalWaitsAndPreemptsNobody) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 64}, {.num_blocks = 4, .block_size = 4});
  const SeqId first = sched.add(iota_tokens(0, 9), 3);
  fake_forward(sched, sched.schedule());
  const SeqId second = sched.add(iota_tokens(50, 6), 3);
  ScheduledStep step = sched.schedule();
  EXPECT_EQ(step.num_preempted, 0);
  EXPECT_EQ(step.seq_ids, std::vector<SeqId>{first});
  EXPECT_EQ(sched.find(second)->status(), SequenceStatus::Waiting);
}

TEST(Scheduler, PriorityPreemptionTakesTheLowestPriorityLatestArrivedAndOnlyAsManyAsNeeded) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 64}, {.num_blocks = 6, .block_size = 4});
  const SeqId early = sched.add(iota_tokens(0, 7), 1);
  const SeqId late = sched.add(iota_tokens(10, 7), 1);
  const SeqId mid = sched.add(iota_tokens(20, 7), 3);
  fake_forward(sched, sched.schedule());  // two blocks each: the cache is full
  const SeqId high = sched.add(iota_tokens(30, 7), 5);
  ScheduledStep step = sched.schedule();
  EXPECT_EQ(step.num_preempted, 1);
  EXPECT_EQ(sched.find(late)->status(), SequenceStatus::Waiting);
  EXPECT_EQ(sched.find(early)->status(), SequenceStatus::Running);
  EXPECT_EQ(sched.find(mid)->status(), SequenceStatus::Running);
  EXPECT_EQ(sched.find(high)->status(), SequenceStatus::Running);
  EXPECT_EQ(step.seq_ids, (std::vector<SeqId>{mid, early, high}));  // decodes, then the admitted prefill
}

TEST(Scheduler, NoPreemptionWhenTheLowerPriorityRunnersCannotFreeEnough) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 64}, {.num_blocks = 4, .block_size = 4});
  const SeqId top = sched.add(iota_tokens(0, 11), 9);  // three blocks
  const SeqId low = sched.add(iota_tokens(20, 3), 0);  // one
  fake_forward(sched, sched.schedule());
  const SeqId middle = sched.add(iota_tokens(40, 8), 5);  // needs two; only low's one is below it
  ScheduledStep step = sched.schedule();
  EXPECT_EQ(step.num_preempted, 0);
  EXPECT_EQ(sched.find(low)->status(), SequenceStatus::Running);
  EXPECT_EQ(sched.find(middle)->status(), SequenceStatus::Waiting);
  EXPECT_EQ(step.seq_ids, (std::vector<SeqId>{top, low}));
}

TEST(Scheduler, RemovedSequenceFreesItsBlocksAtOnce) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 64}, {.num_blocks = 8, .block_size = 4});
  const SeqId a = sched.add(iota_tokens(0, 10));
  const SeqId b = sched.add(iota_tokens(50, 3));
  fake_forward(sched, sched.schedule());
  EXPECT_EQ(sched.block_manager().num_free_blocks(), 4);
  std::unique_ptr<Sequence> done = sched.remove(a);
  ASSERT_NE(done, nullptr);
  EXPECT_EQ(done->status(), SequenceStatus::Finished);
  EXPECT_EQ(done->num_output_tokens(), 1);
  EXPECT_EQ(sched.block_manager().num_free_blocks(), 7);
  EXPECT_EQ(sched.find(a), nullptr);
  EXPECT_EQ(sched.remove(a), nullptr);
  sched.remove(b);
  EXPECT_EQ(sched.block_manager().num_free_blocks(), 8);
  EXPECT_FALSE(sched.has_unfinished());
  sched.block_manager().check_invariants();
}

TEST(Scheduler, SecondRequestWithACachedPrefixFeedsOnlyTheRest) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 64}, {.num_blocks = 16, .block_size = 4});
  std::vector<int32_t> system = iota_tokens(0, 9);
  std::vector<int32_t> second = system;
  second.insert(second.end(), {77, 78});
  sched.add(system);
  fake_forward(sched, sched.schedule());
  const SeqId b = sched.add(second);
  ScheduledStep step = sched.schedule();
  ASSERT_EQ(step.seq_ids.size(), 2u);
  EXPECT_EQ(step.seq_ids[1], b);
  EXPECT_EQ(sched.find(b)->num_cached_tokens(), 8);
  EXPECT_EQ(num_new_tokens(step, 1), 3);
  EXPECT_EQ(step.plan.positions[1], 8);
  EXPECT_EQ(step.plan.num_decode_seqs, 1);  // the first sequence's decode; b's chunk is a prefill
}

// A chat's next turn holds the last turn's prompt and answer. Blocks the answer's decodes wrote enter the prefix
// cache only when the backend's decode arithmetic is its prefill's (cache_decoded_blocks): else the next turn
// computes the answer again as prefill and hits only the prompt's blocks, which prefill wrote.
TEST(Scheduler, DecodeWrittenBlocksEnterThePrefixCacheOnlyWhenAsked) {
  for (const bool cache_decoded : {true, false}) {
    Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 64, .cache_decoded_blocks = cache_decoded},
                    {.num_blocks = 16, .block_size = 4});
    const SeqId a = sched.add(iota_tokens(0, 8));  // two whole prompt blocks
    for (int i = 0; i < 9; ++i) fake_forward(sched, sched.schedule());  // the prefill, then 8 decodes: 16 computed
    std::vector<int32_t> next(sched.find(a)->token_ids().begin(), sched.find(a)->token_ids().end());
    ASSERT_EQ(next.size(), 17u);
    sched.remove(a);
    const SeqId b = sched.add(next);
    ScheduledStep step = sched.schedule();
    ASSERT_EQ(step.seq_ids, std::vector<SeqId>{b});
    EXPECT_EQ(sched.find(b)->num_cached_tokens(), cache_decoded ? 16 : 8) << cache_decoded;
    EXPECT_EQ(step.plan.num_decode_seqs, 0);
  }
}

// The plan says which sequences are decodes (phase 1: the one sampled token, or that and appended ones) and which
// are prefill chunks, so that a prompt's one-token chunk is not taken for a decode (StepPlan::num_decode_seqs).
TEST(Scheduler, APromptsOneTokenChunkIsMarkedAPrefillNotADecode) {
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = 4}, {.num_blocks = 16, .block_size = 4});
  const SeqId a = sched.add(iota_tokens(0, 3));
  ScheduledStep step = sched.schedule();
  EXPECT_EQ(step.plan.num_decode_seqs, 0);  // a's prompt
  fake_forward(sched, step);
  const SeqId b = sched.add(iota_tokens(50, 4));
  step = sched.schedule();  // a's decode takes 1 of the 4 tokens, b's first chunk the other 3
  ASSERT_EQ(step.seq_ids, (std::vector<SeqId>{a, b}));
  EXPECT_EQ(num_new_tokens(step, 1), 3);
  EXPECT_EQ(step.plan.num_decode_seqs, 1);
  fake_forward(sched, step);
  step = sched.schedule();  // a's decode, then b's last prompt token alone: a prefill chunk of one token
  ASSERT_EQ(step.seq_ids, (std::vector<SeqId>{a, b}));
  EXPECT_EQ(num_new_tokens(step, 0), 1);
  EXPECT_EQ(num_new_tokens(step, 1), 1);
  EXPECT_EQ(step.plan.num_decode_seqs, 1);
  step.plan.validate(4, 16);
}

TEST(Scheduler, RefusesWhatCanNeverFit) {
  test::expect_error([] { Scheduler s({.max_num_seqs = 0}, {.num_blocks = 4, .block_size = 4}); }, {"max_num_seqs"});
  Scheduler sched({}, {.num_blocks = 2, .block_size = 4});
  test::expect_error([&] { sched.add(iota_tokens(0, 9)); }, {"prompt of 9 tokens", "(8 tokens)"});
  test::expect_error([&] { sched.add({}); }, {"empty prompt"});
  EXPECT_FALSE(sched.has_unfinished());
}

TEST(Scheduler, SequenceThatOutgrowsTheWholeCacheIsReportedNotStarved) {
  Scheduler sched({}, {.num_blocks = 2, .block_size = 4});
  const SeqId id = sched.add(iota_tokens(0, 7));
  fake_forward(sched, sched.schedule());  // 8 tokens
  fake_forward(sched, sched.schedule());  // 9 tokens: the next decode needs a third block
  ScheduledStep step = sched.schedule();
  EXPECT_TRUE(step.empty());
  EXPECT_EQ(step.num_preempted, 1);
  EXPECT_EQ(sched.find(id)->status(), SequenceStatus::Waiting);
  test::expect_error([&] { sched.schedule(); }, {"9 tokens exceed the KV cache (8 tokens)"});
}

int32_t argmax(const float* row, int32_t n) { return int32_t(std::max_element(row, row + n) - row); }

TEST(Scheduler, BatchedGreedyTokensEqualEachSequenceRunAloneDespiteChunkingAndPreemption) {
  LoadedModel model = load_model(FLINT_TEST_DATA_DIR "/tiny-llama");
  const int32_t vocab = model.config.vocab_size;
  constexpr int32_t kNumOutput = 16, kBlockSize = 16, kBlocks = 8, kBudget = 24;
  std::vector<std::vector<int32_t>> prompts;
  for (int32_t len : {5, 20, 37, 50, 70}) {
    std::vector<int32_t> p;
    for (int32_t i = 0; i < len; ++i) p.push_back((len * 131 + i * 17) % vocab);
    prompts.push_back(p);
  }
  // The last two share a 32-token prefix with the third: full blocks to reuse.
  for (size_t s : {3u, 4u}) std::copy(prompts[2].begin(), prompts[2].begin() + 32, prompts[s].begin());

  // Alone, one at a time.
  std::vector<std::vector<int32_t>> want;
  {
    CpuBackend alone(model.config, model.weights, {.num_kv_blocks = 8, .block_size = kBlockSize, .num_threads = 2});
    OfflineRunner runner(alone);
    for (const auto& p : prompts) {
      runner.reset();
      std::vector<float> logits = runner.feed(p);
      std::vector<int32_t> out;
      for (int32_t i = 0; i < kNumOutput; ++i) {
        out.push_back(argmax(logits.data(), vocab));
        if (i + 1 < kNumOutput) logits = runner.feed(std::vector<int32_t>{out.back()});
      }
      want.push_back(out);
    }
  }

  // Together: 8 blocks hold 128 tokens of the 262 the five finish with.
  CpuBackend backend(model.config, model.weights, {.num_kv_blocks = kBlocks, .block_size = kBlockSize, .num_threads = 2});
  Scheduler sched({.max_num_seqs = 8, .max_num_batched_tokens = kBudget}, {.num_blocks = kBlocks, .block_size = kBlockSize});
  std::map<SeqId, size_t> index;
  for (size_t s = 0; s < prompts.size(); ++s) index[sched.add(prompts[s])] = s;
  std::vector<std::vector<int32_t>> got(prompts.size());
  std::vector<float> logits;
  int32_t num_steps = 0, num_preempted = 0, max_seqs = 0;
  std::set<SeqId> resumed_with_output;
  while (sched.has_unfinished()) {
    ASSERT_LT(++num_steps, 1000);
    ScheduledStep step = sched.schedule();
    ASSERT_FALSE(step.empty());
    ASSERT_LE(step.plan.num_tokens(), kBudget);
    step.plan.validate(kBlockSize, kBlocks);
    num_preempted += step.num_preempted;
    for (const auto& [id, s] : index) {  // preempted after sampling: its output must be recomputed
      const Sequence* seq = sched.find(id);
      if (seq && seq->status() == SequenceStatus::Waiting && seq->num_output_tokens() > 0) resumed_with_output.insert(id);
    }
    max_seqs = std::max(max_seqs, step.plan.num_seqs());
    logits.assign(step.logit_seq_ids.size() * size_t(vocab), 0.0f);
    backend.forward(step.plan, logits.data());
    std::vector<int32_t> sampled;
    for (size_t r = 0; r < step.logit_seq_ids.size(); ++r) sampled.push_back(argmax(logits.data() + r * size_t(vocab), vocab));
    sched.postprocess(step, sampled);
    for (SeqId id : step.logit_seq_ids) {
      const Sequence& seq = *sched.find(id);
      if (seq.num_output_tokens() < kNumOutput) continue;
      got[index[id]].assign(seq.output_token_ids().begin(), seq.output_token_ids().end());
      sched.remove(id);
    }
    sched.block_manager().check_invariants();
  }
  for (size_t s = 0; s < prompts.size(); ++s) EXPECT_EQ(got[s], want[s]) << "prompt " << s << " of " << prompts[s].size() << " tokens";
  EXPECT_GT(num_preempted, 0);
  EXPECT_FALSE(resumed_with_output.empty());
  EXPECT_GT(max_seqs, 1);
  EXPECT_GT(sched.block_manager().stats().num_prefix_hit_tokens, 0);
  EXPECT_EQ(sched.block_manager().num_free_blocks(), kBlocks);
  std::cout << "  " << num_steps << " steps, " << num_preempted << " preemptions, prefix hit rate "
            << sched.block_manager().stats().prefix_hit_rate() << "\n";
}

}  // namespace
}  // namespace flint
