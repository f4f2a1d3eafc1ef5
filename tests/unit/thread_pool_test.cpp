// ThreadPool: every index runs exactly once, call after call, whatever the sizes.
#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "common/thread_pool.h"

namespace flint {
namespace {

TEST(ThreadPool, EveryIndexRunsExactlyOnceAcrossManyCalls) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 7, 8, 9, 100, 1000, 4097}) {
    for (int64_t grain : {1, 4, 64}) {
      for (int rep = 0; rep < 50; ++rep) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
          ASSERT_LE(0, b);
          ASSERT_LE(b, e);
          ASSERT_LE(e, n);
          for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "n " << n << " index " << i;
      }
    }
  }
}

TEST(ThreadPool, ChunksAreAtLeastTheGrainExceptTheLast) {
  ThreadPool pool(2);
  std::atomic<int> short_chunks{0};
  pool.parallel_for(1000, 64, [&](int64_t b, int64_t e) {
    if (e - b < 64 && e != 1000) short_chunks.fetch_add(1);
  });
  EXPECT_EQ(short_chunks.load(), 0);
}

TEST(ThreadPool, SingleThreadPoolRunsInline) {
  ThreadPool pool(1);
  EXPECT_EQ(pool.num_threads(), 1);
  int64_t total = 0;
  pool.parallel_for(10, 1, [&](int64_t b, int64_t e) { total += e - b; });
  EXPECT_EQ(total, 10);
}

}  // namespace
}  // namespace flint

// Calls of alternating sizes back to back: a worker late from one call must not
// run a chunk of the next with the bounds it read for the previous one (it once
// could, running part of the next call twice and counting it in that call's done).
TEST(ThreadPool, BackToBackCallsOfDifferentSizesRunEveryIndexExactlyOnce) {
  flint::ThreadPool pool(4);
  std::vector<std::atomic<int>> hits(2048);
  for (int call = 0; call < 5000; ++call) {
    const int64_t n = 1 + (int64_t(call) * 7919) % 2048;
    for (int64_t i = 0; i < n; ++i) hits[size_t(i)].store(0, std::memory_order_relaxed);
    pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1, std::memory_order_relaxed);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "call " << call << " index " << i;
  }
}
