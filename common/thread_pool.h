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
  // fn(begin, end) on them from all threads; returns when every chunk is done.
  // The split depends only on n, grain and num_threads, never on timing.
  // fn must not throw. Not reentrant: one parallel_for at a time.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop(int index);
  void run_chunks(int index);

  std::vector<std::thread> workers_;
  // A forward pass issues hundreds of parallel_for calls per token: workers
  // spin briefly on `generation_` before sleeping on the condition variable,
  // and the caller spins on `pending_` before sleeping, so that a call costs
  // microseconds, not a futex wake-up each way.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunk_ = 0;
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
