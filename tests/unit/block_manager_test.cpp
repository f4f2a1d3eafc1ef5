// BlockManager tests: prefix reuse, exact return of blocks, collisions, LRU
// eviction, and a randomised stress run checking every invariant after each step.
#include "engine/block_manager.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>

#include "test_util.h"

namespace flint {
namespace {

using test::iota_tokens;

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(BlockManager, SecondRequestWithTheSameSystemPromptReusesItsFullBlocksAndReportsThemCached) {
  BlockManager bm({.num_blocks = 16, .block_size = 4});
  const std::vector<int32_t> system = iota_tokens(100, 10);  // two full blocks and two tokens
  const std::vector<int32_t> a = concat(system, {1, 2, 3});
  const std::vector<int32_t> b = concat(system, {7, 8});
  BlockTable ta, tb;
  EXPECT_EQ(bm.allocate(ta, a), 0);
  bm.commit(ta, a, int32_t(a.size()));  // the step that computed them ran
  EXPECT_EQ(bm.allocate(tb, b), 8);
  ASSERT_EQ(tb.num_blocks(), 3);
  EXPECT_EQ(tb.block_ids()[0], ta.block_ids()[0]);
  EXPECT_EQ(tb.block_ids()[1], ta.block_ids()[1]);
  EXPECT_NE(tb.block_ids()[2], ta.block_ids()[2]);
  EXPECT_EQ(bm.ref_count(ta.block_ids()[0]), 2);
  EXPECT_EQ(bm.ref_count(ta.block_ids()[2]), 1);
  BlockManagerStats s = bm.stats();
  EXPECT_EQ(s.num_used_blocks, 5);
  EXPECT_EQ(s.num_cached_blocks, 3);  // a's three full blocks
  EXPECT_EQ(s.num_prefix_query_tokens, int64_t(a.size() + b.size()));
  EXPECT_EQ(s.num_prefix_hit_tokens, 8);
  EXPECT_DOUBLE_EQ(s.prefix_hit_rate(), 8.0 / double(a.size() + b.size()));
  bm.check_invariants();
}

TEST(BlockManager, UncomputedBlocksAreNotOfferedToOtherSequences) {
  BlockManager bm({.num_blocks = 8, .block_size = 4});
  const std::vector<int32_t> p = iota_tokens(0, 12);
  BlockTable ta, tb;
  ASSERT_EQ(bm.allocate(ta, p), 0);
  bm.commit(ta, p, 5);  // one chunk of five tokens computed: only block 0 is full and written
  EXPECT_EQ(bm.allocate(tb, p), 4);
}

TEST(BlockManager, FullyCachedPromptStillLeavesItsLastTokenToCompute) {
  BlockManager bm({.num_blocks = 8, .block_size = 4});
  const std::vector<int32_t> p = iota_tokens(0, 8);
  BlockTable ta, tb;
  ASSERT_EQ(bm.allocate(ta, p), 0);
  bm.commit(ta, p, 8);
  EXPECT_EQ(bm.allocate(tb, p), 4);  // the block of the last token is its own
  EXPECT_NE(tb.block_ids()[1], ta.block_ids()[1]);
}

TEST(BlockManager, FreedSequenceReturnsEveryBlock) {
  BlockManager bm({.num_blocks = 6, .block_size = 4});
  const std::vector<int32_t> p = iota_tokens(0, 9);
  {
    BlockTable t;
    ASSERT_EQ(bm.allocate(t, p), 0);
    for (int i = 0; i < 5; ++i) bm.append_slot(t);  // 14 tokens: 4 blocks
    bm.commit(t, concat(p, {1, 2, 3, 4, 5}), 14);
    EXPECT_EQ(t.num_blocks(), 4);
    EXPECT_EQ(bm.num_free_blocks(), 2);
  }
  EXPECT_EQ(bm.num_free_blocks(), 6);
  EXPECT_EQ(bm.stats().num_used_blocks, 0);
  BlockTable t2;
  ASSERT_EQ(bm.allocate(t2, iota_tokens(50, 24)), 0);
  EXPECT_EQ(bm.num_free_blocks(), 0);
  t2.reset();
  EXPECT_EQ(bm.num_free_blocks(), 6);
  bm.check_invariants();
}

TEST(BlockManager, MovedTableReturnsItsBlocksExactlyOnce) {
  BlockManager bm({.num_blocks = 4, .block_size = 4});
  BlockTable a;
  ASSERT_EQ(bm.allocate(a, iota_tokens(0, 6)), 0);
  BlockTable b = std::move(a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(bm.num_free_blocks(), 2);
  BlockTable c;
  ASSERT_EQ(bm.allocate(c, iota_tokens(0, 3)), 0);
  c = std::move(b);  // c's own block goes back, b's two move in
  EXPECT_EQ(bm.num_free_blocks(), 2);
  c.reset();
  a.reset();
  EXPECT_EQ(bm.num_free_blocks(), 4);
  bm.check_invariants();
}

TEST(BlockManager, KnowsWhenItCannotAllocateOrGrow) {
  BlockManager bm({.num_blocks = 3, .block_size = 4});
  BlockTable a, b;
  EXPECT_FALSE(bm.can_allocate(iota_tokens(0, 13)));
  ASSERT_EQ(bm.allocate(a, iota_tokens(0, 8)), 0);
  EXPECT_FALSE(bm.allocate(b, iota_tokens(0, 5)).has_value());  // needs 2 of the 1 free
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(bm.num_free_blocks(), 1);
  ASSERT_EQ(bm.allocate(b, iota_tokens(20, 3)), 0);
  EXPECT_TRUE(bm.can_append_slot(b));  // slot 3 of its block
  bm.append_slot(b);
  EXPECT_FALSE(bm.can_append_slot(b));  // would need a fourth block
  EXPECT_FALSE(bm.can_append_slot(a));
  test::expect_error([&] { bm.append_slot(a); }, {"no free KV block"});
  bm.check_invariants();
}

TEST(BlockManager, HashCollisionCannotAliasDifferentTokens) {
  // hash_bits 0: every block key is the same, so every lookup collides.
  BlockManager bm({.num_blocks = 16, .block_size = 4, .hash_bits = 0});
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  BlockTable ta, tb, tc, td;
  ASSERT_EQ(bm.allocate(ta, a), 0);
  bm.commit(ta, a, 9);
  EXPECT_EQ(bm.block_key(0, std::vector<int32_t>{1, 2, 3, 4}), bm.block_key(0, std::vector<int32_t>{9, 9, 9, 9}));
  const std::vector<int32_t> b = {9, 9, 9, 9, 9};
  EXPECT_EQ(bm.allocate(tb, b), 0);
  EXPECT_NE(tb.block_ids()[0], ta.block_ids()[0]);
  // Same second block after a different first block: the chain does not match either.
  const std::vector<int32_t> d = {0, 0, 0, 0, 5, 6, 7, 8, 1};
  EXPECT_EQ(bm.allocate(td, d), 0);
  // The same tokens still hit.
  EXPECT_EQ(bm.allocate(tc, a), 4);
  EXPECT_EQ(tc.block_ids()[0], ta.block_ids()[0]);
  bm.check_invariants();
}

TEST(BlockManager, SameTokensAfterADifferentPrefixAreNotReusedEvenWhenKeysCollide) {
  // 2-bit keys: find prefixes P, Q (cached apart) and a block X whose key after Q
  // equals its key after P. X's KV was computed after P, so it is wrong after Q.
  BlockManager bm({.num_blocks = 16, .block_size = 2, .hash_bits = 2});
  std::vector<int32_t> p, q, x;
  bool found = false;
  for (int32_t a = 0; a < 64 && !found; ++a) {
    for (int32_t b = 0; b < 64 && !found; ++b) {
      p = {a, 1};
      q = {b, 2};
      x = {7, a + b};
      const uint64_t kp = bm.block_key(0, p), kq = bm.block_key(0, q), kx = bm.block_key(kp, x);
      found = kp != kq && kx != kp && kx != kq && bm.block_key(kq, x) == kx;
    }
  }
  ASSERT_TRUE(found);
  BlockTable ta, tc, tb;
  const std::vector<int32_t> a = concat(concat(p, x), {5}), c = concat(q, {5}), b = concat(concat(q, x), {5});
  ASSERT_EQ(bm.allocate(ta, a), 0);
  bm.commit(ta, a, 5);
  ASSERT_EQ(bm.allocate(tc, c), 0);
  bm.commit(tc, c, 3);
  EXPECT_EQ(bm.allocate(tb, b), 2);  // Q only, never P's X
  EXPECT_NE(tb.block_ids()[1], ta.block_ids()[1]);
  bm.check_invariants();
}

TEST(BlockManager, FullWidthHashChainsOverThePreviousBlock) {
  BlockManager bm({.num_blocks = 4, .block_size = 4});
  const std::vector<int32_t> blk = {5, 6, 7, 8};
  EXPECT_NE(bm.block_key(0, blk), bm.block_key(1, blk));
  EXPECT_NE(bm.block_key(0, blk), bm.block_key(0, std::vector<int32_t>{5, 6, 7, 9}));
  EXPECT_NE(bm.block_key(0, std::vector<int32_t>{1, 0}), bm.block_key(0, std::vector<int32_t>{0, 1}));
}

TEST(BlockManager, EvictionReusesLeastRecentlyUsedCachedBlocks) {
  BlockManager bm({.num_blocks = 4, .block_size = 2});
  const std::vector<int32_t> a = {1, 2, 3}, b = {5, 6, 7}, c = {8, 9, 10};
  auto run_and_free = [&](const std::vector<int32_t>& p) {
    BlockTable t;
    std::optional<int32_t> cached = bm.allocate(t, p);
    EXPECT_TRUE(cached.has_value());
    bm.commit(t, p, int32_t(p.size()));
    return *cached;
  };
  EXPECT_EQ(run_and_free(a), 0);
  EXPECT_EQ(run_and_free(b), 0);
  EXPECT_EQ(run_and_free(c), 0);
  EXPECT_EQ(run_and_free(a), 2);  // a hit refreshes a: b is now the least recently used
  EXPECT_EQ(bm.stats().num_cached_blocks, 3);
  EXPECT_EQ(bm.num_free_blocks(), 4);
  {
    BlockTable big;  // 2 blocks: the one never-cached block, then one eviction (b's)
    ASSERT_EQ(bm.allocate(big, iota_tokens(40, 4)), 0);
    bm.check_invariants();
  }
  EXPECT_EQ(run_and_free(c), 2);
  EXPECT_EQ(run_and_free(a), 2);
  EXPECT_EQ(run_and_free(b), 0);
  bm.check_invariants();
}

TEST(BlockManager, RejectsBadOptions) {
  test::expect_error([] { BlockManager bm({.num_blocks = 0, .block_size = 4}); }, {"num_blocks"});
  test::expect_error([] { BlockManager bm({.num_blocks = 4, .block_size = 0}); }, {"block_size"});
  test::expect_error([] { BlockManager bm({.num_blocks = 4, .block_size = 4, .hash_bits = 65}); }, {"hash_bits"});
}

// A stand-in for the KV cache: each slot holds the tokens up to and including its
// own (K/V depend on the whole prefix). A sequence writes the slots of the tokens
// it computes; a prefix hit must find exactly its own prefixes there.
struct StressSeq {
  std::vector<int32_t> tokens;
  int32_t num_computed = 0;
  BlockTable table;
};

class BlockManagerStress : public ::testing::TestWithParam<int32_t> {};

TEST_P(BlockManagerStress, BlockIsNeverHandedOutTwice) {
  constexpr int32_t kBlocks = 24, kBlockSize = 4;
  BlockManager bm({.num_blocks = kBlocks, .block_size = kBlockSize, .hash_bits = GetParam()});
  std::vector<std::vector<std::vector<int32_t>>> kv(kBlocks, std::vector<std::vector<int32_t>>(kBlockSize));
  std::mt19937 rng(1234 + GetParam());
  // Few prefixes over a tiny vocabulary, so hits (and, with few hash bits, collisions) are common.
  std::vector<std::vector<int32_t>> prefixes;
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> p;
    for (int j = 0; j < 12; ++j) p.push_back(int32_t(rng() % 3));
    prefixes.push_back(p);
  }
  std::vector<std::unique_ptr<StressSeq>> seqs;
  int64_t hits = 0;

  auto compute = [&](StressSeq& s, int32_t upto) {  // one step: write the slots, then commit
    for (int32_t p = s.num_computed; p < upto; ++p) {
      const int32_t blk = s.table.block_ids()[size_t(p / kBlockSize)];
      ASSERT_EQ(bm.ref_count(blk), 1) << "writing into a shared block " << blk;
      kv[size_t(blk)][size_t(p % kBlockSize)].assign(s.tokens.begin(), s.tokens.begin() + p + 1);
    }
    s.num_computed = upto;
    bm.commit(s.table, s.tokens, upto);
  };

  for (int iter = 0; iter < 4000; ++iter) {
    const uint32_t op = rng() % 10;
    if (op < 4) {  // admit a new sequence
      auto s = std::make_unique<StressSeq>();
      s->tokens = prefixes[rng() % prefixes.size()];
      s->tokens.resize(size_t(1 + rng() % 12));
      for (uint32_t j = rng() % 6; j > 0; --j) s->tokens.push_back(int32_t(rng() % 3));
      const bool fits = bm.can_allocate(s->tokens);
      std::optional<int32_t> cached = bm.allocate(s->table, s->tokens);
      ASSERT_EQ(fits, cached.has_value());
      if (!cached) continue;
      ASSERT_LT(*cached, int32_t(s->tokens.size()));
      for (int32_t p = 0; p < *cached; ++p) {  // the cached slots hold exactly our prefixes
        const int32_t blk = s->table.block_ids()[size_t(p / kBlockSize)];
        const std::vector<int32_t> prefix(s->tokens.begin(), s->tokens.begin() + p + 1);
        ASSERT_EQ(kv[size_t(blk)][size_t(p % kBlockSize)], prefix) << "aliased block " << blk;
      }
      hits += *cached;
      s->num_computed = *cached;
      seqs.push_back(std::move(s));
    } else if (op < 7 && !seqs.empty()) {  // compute a chunk, or decode one token
      StressSeq& s = *seqs[rng() % seqs.size()];
      if (s.num_computed < int32_t(s.tokens.size())) {
        compute(s, std::min(int32_t(s.tokens.size()), s.num_computed + 1 + int32_t(rng() % 7)));
      } else if (bm.can_append_slot(s.table)) {
        s.tokens.push_back(int32_t(rng() % 3));
        bm.append_slot(s.table);
        compute(s, int32_t(s.tokens.size()));
      }
    } else if (!seqs.empty()) {  // finish one
      seqs.erase(seqs.begin() + long(rng() % seqs.size()));
    }
    ASSERT_NO_THROW(bm.check_invariants()) << "iteration " << iter;
    std::map<int32_t, int32_t> holders;
    for (const auto& s : seqs) {
      ASSERT_EQ(s->table.num_slots(), int32_t(s->tokens.size()));
      for (int32_t b : s->table.block_ids()) ++holders[b];
    }
    int32_t used = 0;
    for (int32_t b = 0; b < kBlocks; ++b) {
      ASSERT_EQ(bm.ref_count(b), holders.contains(b) ? holders[b] : 0) << "block " << b;
      used += bm.ref_count(b) > 0;
    }
    ASSERT_EQ(used + bm.num_free_blocks(), kBlocks);
  }
  seqs.clear();
  EXPECT_EQ(bm.num_free_blocks(), kBlocks);
  EXPECT_GT(hits, 0);
  bm.check_invariants();
}

INSTANTIATE_TEST_SUITE_P(HashBits, BlockManagerStress, ::testing::Values(64, 2, 0),
                         [](const auto& info) { return "HashBits" + std::to_string(info.param); });

}  // namespace
}  // namespace flint
