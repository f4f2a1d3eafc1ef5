// How the decode kernel cuts a sequence's keys into splits (kernels/attention_params.h): the splits cover the keys
// exactly once, none is empty, no sequence gets more than kAttnMaxSplits, the grid's bound holds for every shorter
// sequence, and the workspace sized from it stays bounded at long contexts. The kernel (kernels/cuda/attention.cu)
// takes its split ranges from these functions as the walk below does.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/attention_params.h"

namespace flint {
namespace {

// The kernel's split ranges for a sequence of n keys: split i covers [i · per, min((i + 1) · per, n)).
void expect_splits_cover_the_keys(int32_t n) {
  const int32_t splits = attention_num_splits(n), per = attention_keys_per_split(n);
  ASSERT_GE(splits, 1) << n;
  ASSERT_LE(splits, kAttnMaxSplits) << n;
  ASSERT_EQ(per % kAttnKeysPerSplit, 0) << n;
  int32_t next = 0;
  for (int32_t i = 0; i < splits; ++i) {
    const int32_t begin = i * per, end = std::min(begin + per, n);
    ASSERT_EQ(begin, next) << n << " split " << i;
    ASSERT_LT(begin, end) << n << " split " << i << " is empty";
    next = end;
  }
  EXPECT_EQ(next, n);
}

TEST(AttentionSplits, SplitsCoverEveryKeyOnceAndNoneIsEmpty) {
  for (int32_t n = 1; n <= 3 * kAttnKeysPerSplit * kAttnMaxSplits; ++n) expect_splits_cover_the_keys(n);
  for (int32_t n : {131071, 131072, 131073, 1 << 20, (1 << 24) - 1, 1 << 24}) expect_splits_cover_the_keys(n);
}

TEST(AttentionSplits, ShortCachesKeep128KeySplitsAndLongOnesAreCapped) {
  EXPECT_EQ(attention_num_splits(0), 1);
  EXPECT_EQ(attention_num_splits(128), 1);
  EXPECT_EQ(attention_num_splits(129), 2);
  EXPECT_EQ(attention_num_splits(4096), 32);
  EXPECT_EQ(attention_keys_per_split(16384), 128);
  EXPECT_EQ(attention_num_splits(16384), 128);
  EXPECT_EQ(attention_keys_per_split(16385), 256);
  EXPECT_EQ(attention_num_splits(16385), 65);
  EXPECT_EQ(attention_keys_per_split(131072), 1024);
  EXPECT_EQ(attention_num_splits(131072), 128);
}

// The decode grid has attention_max_splits(max_kv_len) splits per sequence and the workspace as many slots: every
// sequence up to max_kv_len must fit, though the split count is not monotone in the length.
TEST(AttentionSplits, TheGridBoundHoldsForEveryShorterSequence) {
  int32_t most = 0;
  for (int32_t n = 1; n <= 5 * kAttnKeysPerSplit * kAttnMaxSplits; ++n) {
    most = std::max(most, attention_num_splits(n));
    ASSERT_LE(most, attention_max_splits(n)) << n;
  }
  EXPECT_EQ(attention_max_splits(1 << 24), kAttnMaxSplits);
  EXPECT_EQ(attention_max_splits(16385), kAttnMaxSplits);
  EXPECT_EQ(attention_max_splits(300), 3);
}

TEST(AttentionSplits, TheWorkspaceIsBoundedAtLongContexts) {
  // 64 sequences of Llama-3.2-1B (32 query heads, head_dim 64).
  EXPECT_EQ(attention_workspace_bytes(64, 32, 64, 128), 0u);
  EXPECT_EQ(attention_workspace_bytes(64, 32, 64, 4096), size_t(64) * 32 * 32 * 66 * 4);
  const size_t at_16k = attention_workspace_bytes(64, 32, 64, 16384);
  EXPECT_EQ(at_16k, size_t(64) * 32 * 128 * 66 * 4);  // 69 MB
  EXPECT_EQ(attention_workspace_bytes(64, 32, 64, 131072), at_16k);
  EXPECT_EQ(attention_workspace_bytes(64, 32, 64, 1 << 24), at_16k);
}

}  // namespace
}  // namespace flint
