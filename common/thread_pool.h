// ThreadPool: a fixed set of workers that run one parallel_for at a time.
// The CPU backend owns one; kernels take it as an optional argument.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace flint {

class ThreadPool {
 public:
  // num_threads <= 0: one per hardware thread. The calling thread works too,
  // so the pool starts num_threads - 1 workers.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Splits [0, n) into contiguous chunks of at least `grain` items and calls
  // fn(begin, end) once per chunk from any of the threads; returns when every
  // chunk is done. Chunk bounds depend only on n, grain and num_threads; which
  // thread runs a chunk does not matter to a caller that writes disjoint outputs.
  // fn must not throw. Not reentrant: one parallel_for at a time.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop();
  // Claims and runs chunks of generation `gen` until none are left.
  void run_chunks(uint32_t gen);

  std::vector<std::thread> workers_;
  // Chunks are claimed with a compare-and-swap on (generation << 32 | number of
  // chunks << 16 | next chunk), so the caller never waits for a worker that has
  // not started (a descheduled worker simply claims nothing) and a late worker
  // cannot claim a chunk of a finished call, nor read the next call's bound
  // against its stale claim (TSan found that race: such a worker ran a chunk with
  // the next call's half-written fields and counted it in the next call's done_).
  // The caller spins until `done_` counts every chunk.
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<int64_t> n_{0}, chunk_{0};
  std::atomic<const std::function<void(int64_t, int64_t)>*> fn_{nullptr};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable wake_cv_;
};

// Runs fn over [0, n) on `pool` when given, else inline on this thread.
inline void parallel_for(ThreadPool* pool, int64_t n, int64_t grain,
                         const std::function<void(int64_t, int64_t)>& fn) {
  if (pool != nullptr && n > grain) {
    pool->parallel_for(n, grain, fn);
  } else if (n > 0) {
    fn(0, n);
  }
}

}  // namespace flint
