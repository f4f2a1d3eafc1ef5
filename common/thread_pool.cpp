#include "common/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FLINT_PAUSE() _mm_pause()
#else
#define FLINT_PAUSE() std::this_thread::yield()
#endif

namespace flint {

namespace {
// A decode step issues a few hundred parallel sections, microseconds apart:
// idle workers poll briefly (pausing, then yielding the core to whoever needs
// it) before sleeping on the condition variable.
constexpr int kPauseIterations = 256;
constexpr int kYieldIterations = 64;
constexpr int kChunksPerThread = 4;

// The claim word: generation (32 bits) | the call's number of chunks (16) | next chunk (16).
constexpr int64_t kMaxChunks = 0xffff;
uint32_t generation_of(uint64_t claim) { return uint32_t(claim >> 32); }
int64_t num_chunks_of(uint64_t claim) { return int64_t((claim >> 16) & 0xffffu); }
int64_t next_chunk_of(uint64_t claim) { return int64_t(claim & 0xffffu); }
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  wake_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks(uint32_t gen) {
  for (;;) {
    uint64_t claim = claim_.load(std::memory_order_acquire);
    if (generation_of(claim) != gen) return;
    // The bound comes from the same word as the generation: a worker that read
    // the last claim of a finished call cannot pair it with the next call's
    // bound, which the caller writes before it publishes the new generation.
    const int64_t index = next_chunk_of(claim);
    if (index >= num_chunks_of(claim)) return;
    if (!claim_.compare_exchange_weak(claim, claim + 1, std::memory_order_acq_rel)) continue;
    // Chunk `index` of generation `gen` is ours: the call cannot finish, nor its
    // fields change, before done_ counts it.
    const int64_t chunk = chunk_.load(std::memory_order_relaxed), n = n_.load(std::memory_order_relaxed);
    const int64_t b = index * chunk, e = std::min(n, b + chunk);
    (*fn_.load(std::memory_order_relaxed))(b, e);
    done_.fetch_add(1, std::memory_order_release);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t T = num_threads();
  int64_t chunk = std::max<int64_t>(std::max<int64_t>(grain, 1), (n + T * kChunksPerThread - 1) / (T * kChunksPerThread));
  int64_t num_chunks = (n + chunk - 1) / chunk;
  if (num_chunks > kMaxChunks) {  // the claim word holds at most this many
    chunk = (n + kMaxChunks - 1) / kMaxChunks;
    num_chunks = (n + chunk - 1) / chunk;
  }
  if (workers_.empty() || num_chunks == 1) {
    fn(0, n);
    return;
  }
  fn_.store(&fn, std::memory_order_relaxed);
  n_.store(n, std::memory_order_relaxed);
  chunk_.store(chunk, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  const uint32_t gen = generation_of(claim_.load(std::memory_order_relaxed)) + 1;
  claim_.store(uint64_t(gen) << 32 | uint64_t(num_chunks) << 16, std::memory_order_seq_cst);  // publishes the fields above
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    wake_cv_.notify_all();
  }
  run_chunks(gen);
  // Only chunks a worker has claimed and is running are left: wait for them.
  for (int i = 0; done_.load(std::memory_order_acquire) != num_chunks; ++i) {
    if (i < kPauseIterations) FLINT_PAUSE();
    else std::this_thread::yield();
  }
}

void ThreadPool::worker_loop() {
  uint32_t seen = 0;
  for (;;) {
    auto current = [&] { return generation_of(claim_.load(std::memory_order_acquire)); };
    for (int i = 0; i < kPauseIterations + kYieldIterations && current() == seen && !stop_.load(); ++i) {
      if (i < kPauseIterations) FLINT_PAUSE();
      else std::this_thread::yield();
    }
    if (current() == seen && !stop_.load()) {
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      wake_cv_.wait(lock, [&] { return stop_.load() || current() != seen; });
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    }
    if (stop_.load()) return;
    seen = current();
    run_chunks(seen);
  }
}

}  // namespace flint
