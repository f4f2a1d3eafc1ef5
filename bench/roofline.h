// The two sides of a decode step's roofline, shared by the benchmarks that print one (engine_bench, cpu_model_bench):
// the bytes a step must read (every weight tensor once, as the backend stores it; the KV cache's keys and values)
// and the bandwidth to read them at, measured in the same process.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "model/config.h"
#include "model/model_weights.h"
#ifdef FLINT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace flint::bench {

// ---- Bandwidth, measured in this process. CUDA: bytes = 2 x buffer per copy (read once, written once), as
// bench/gpu_bench_common.cuh counts its copy ceiling. CPU: a read-only pass (what a decode step does to its weights),
// bytes = buffer: a memcpy's write-allocate traffic makes a copy undercount what reading alone reaches there.
inline double measure_cpu_read_gbps(int threads) {
  const size_t words = (size_t(256) << 20) / sizeof(uint64_t);  // 256 MiB, far past any L3
  std::vector<uint64_t> buf(words);
  for (size_t i = 0; i < words; ++i) buf[i] = i * 0x9E3779B97F4A7C15ull;
  const int n = std::max(1, threads);
  std::vector<uint64_t> sums(static_cast<size_t>(n));
  std::vector<double> times;
  for (int rep = 0; rep < 6; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < n; ++t) {
      pool.emplace_back([&, t] {
        const size_t lo = words * size_t(t) / size_t(n), hi = words * size_t(t + 1) / size_t(n);
        uint64_t a = 0, b = 0, c = 0, d = 0;
        size_t i = lo;
        for (; i + 4 <= hi; i += 4) a ^= buf[i], b ^= buf[i + 1], c ^= buf[i + 2], d ^= buf[i + 3];
        for (; i < hi; ++i) a ^= buf[i];
        sums[size_t(t)] = a ^ b ^ c ^ d;
      });
    }
    for (auto& th : pool) th.join();
    if (rep > 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());  // the first one warms up
  }
  uint64_t all = 0, want = 0;
  for (uint64_t s : sums) all ^= s;
  for (size_t i = 0; i < words; ++i) want ^= buf[i];
  if (all != want) fail("cpu read: the threads' checksum differs from a serial one");
  // The fastest pass: on a shared machine the others' load only ever slows a pass down.
  return double(words * sizeof(uint64_t)) / *std::min_element(times.begin(), times.end()) / 1e9;
}

#ifdef FLINT_HAVE_CUDA
inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("bandwidth: ", what, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

inline double measure_cuda_copy_gbps(bool quick) {
  const size_t bytes = size_t(quick ? 256 : 1024) << 20;
  void *src = nullptr, *dst = nullptr;
  cuda_check(cudaMalloc(&src, bytes), "cudaMalloc");
  cuda_check(cudaMalloc(&dst, bytes), "cudaMalloc");
  cuda_check(cudaMemset(src, 0x5a, bytes), "cudaMemset");
  cudaEvent_t a, b;
  cuda_check(cudaEventCreate(&a), "cudaEventCreate");
  cuda_check(cudaEventCreate(&b), "cudaEventCreate");
  std::vector<double> times;
  for (int rep = 0; rep < (quick ? 6 : 12); ++rep) {
    cuda_check(cudaEventRecord(a), "cudaEventRecord");
    cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync");
    cuda_check(cudaEventRecord(b), "cudaEventRecord");
    cuda_check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    if (rep >= 2) times.push_back(ms / 1e3);  // two warm-ups
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cuda_check(cudaFree(src), "cudaFree");
  cuda_check(cudaFree(dst), "cudaFree");
  std::sort(times.begin(), times.end());
  return 2.0 * double(bytes) / times[times.size() / 2] / 1e9;
}
#endif

// ---- Bytes a decode step reads (see the header).
inline uint64_t decode_weight_bytes(const ModelWeights& w) {
  auto b = [](const Tensor* t) -> uint64_t { return t ? t->nbytes : 0; };
  uint64_t bytes = b(w.output) + b(w.output_norm);
  for (const auto& l : w.layers)
    bytes += b(l.attn_norm) + b(l.wq) + b(l.wk) + b(l.wv) + b(l.maybe_bq) + b(l.maybe_bk) + b(l.maybe_bv) +
             b(l.maybe_q_norm) + b(l.maybe_k_norm) + b(l.wo) + b(l.ffn_norm) + b(l.w_gate) + b(l.w_up) + b(l.w_down);
  return bytes;
}

inline uint64_t kv_bytes_per_token(const ModelConfig& c, const std::string& device) {
  const uint64_t elem = device == "cuda" ? 2 : 4;  // CUDA keeps bf16 K/V, the CPU fp32
  return uint64_t(c.num_layers) * uint64_t(c.num_kv_heads) * uint64_t(c.head_dim) * 2 * elem;
}

}  // namespace flint::bench
