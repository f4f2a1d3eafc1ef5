// Sampling on the GPU (kernels/cuda/sampling.h): one block of kSampleThreads per row; semantics and the shared
// per-value arithmetic in kernels/sampling_params.h, the CPU twin in kernels/cpu/sampling.cpp. Every sum is of
// integer weights (exact, so the same in any order), every float operation an explicit __f*_rn intrinsic (as the
// twin rounds them), so kernel and twin pick the same token.
#include "kernels/cuda/sampling.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/sampling_common.cuh"
#include "kernels/cuda/sampling_split.h"

namespace flint::cuda {
namespace {

using namespace flint::sampling;
using namespace sample_detail;

constexpr int kThreads = kSampleThreads;
constexpr int kWarps = kThreads / 32;

struct Shared {
  Hist<kWarps> h;                // a radix pass's histogram: weights (or counts) and candidates per 8-bit digit
  unsigned long long warp[kWarps];
  Pick pick;                     // the chosen digit, what remains of the target, its candidates
  unsigned int list_len;
  unsigned long long list_key[kListCap], list_weight[kListCap];
  int token;
};

template <class F>
__device__ __forceinline__ void sweep(const float* row, int vocab, F&& f) {
  sweep_range<kThreads>(row, 0, vocab, f);
}

// The order key K of the candidate at which the running weight, in order-key order (largest first), reaches
// `target`: Σ_{key > K} w < target <= Σ_{key >= K} w, over tokens with weigh(i, logit) > 0. target must be in
// [1, Σ w]. Eight passes of 8 bits from the top; each pass histograms the weights (and counts) of the candidates,
// the tokens whose higher digits match those chosen so far (each thread's sums per digit gathered in a DigitCache
// first). Once a pass leaves at most kListCap candidates, the next pass sweeping the row also copies them
// (key, weight) to shared memory, and the passes after it read only that list: a top-p select usually reads the
// row two or three times instead of eight. The same integer sums over the same candidates: the same K.
template <class Weigh>
__device__ uint64_t radix_select(const float* logits, int vocab, uint64_t target, Weigh weigh, Shared& sh) {
  uint64_t prefix = 0, remaining = target;
  uint32_t candidates = 0xFFFFFFFFu;  // unknown before the first pass
  bool listed = false;                // sh.list holds every candidate of `prefix`
  for (int d = 7; d >= 0; --d) {
    const int shift = 8 * d;
    const uint64_t hi_mask = higher_digits_mask(d);
    const bool collect = !listed && candidates <= uint32_t(kListCap);
    for (int b = threadIdx.x; b < 256; b += kThreads) sh.h.weight[b] = 0, sh.h.count[b] = 0;
    if (threadIdx.x == 0 && collect) sh.list_len = 0;
    __syncthreads();
    if (listed) {
      for (int j = threadIdx.x; j < int(sh.list_len); j += kThreads) {
        const uint64_t key = sh.list_key[j];
        if ((key & hi_mask) != prefix) continue;
        const uint32_t digit = uint32_t(key >> shift) & 255u;
        add_u64(&sh.h.weight[digit], sh.list_weight[j]);
        atomicAdd(&sh.h.count[digit], 1u);
      }
    } else {
      DigitCache cache;
      sweep(logits, vocab, [&](int i, float l) {
        const uint64_t key = order_key(l, i);
        if ((key & hi_mask) != prefix) return;
        const uint64_t w = weigh(i, l, key);
        if (w == 0) return;
        if (collect) {  // at most `candidates` <= kListCap of these
          const unsigned slot = atomicAdd(&sh.list_len, 1u);
          sh.list_key[slot] = key;
          sh.list_weight[slot] = w;
        }
        cache.add(uint32_t(key >> shift) & 255u, w, sh.h);
      });
      cache.flush(sh.h);
    }
    listed = listed || collect;
    __syncthreads();
    if (threadIdx.x < 32) pick_digit(sh.h, remaining, sh.pick);
    __syncthreads();
    prefix |= uint64_t(sh.pick.digit) << shift;
    remaining = sh.pick.remaining;
    candidates = sh.pick.count;
    __syncthreads();
  }
  return prefix;
}

__global__ void __launch_bounds__(kThreads, 1) sample_kernel(SampleParams p) {
  pdl_begin();
  __shared__ Shared sh;
  const int r = blockIdx.x;
  const SampleRow row = p.rows[r];
  float* logits = p.logits + int64_t(r) * p.ld_logits;
  const int vocab = p.vocab;

  // 1. Penalties.
  apply_penalties<kThreads>(p, r, row, logits, 0, vocab);

  // 2-3. The top token (largest key), the tempered max m, every token's weight summed.
  const bool greedy = row.temperature == 0.0f;
  const float inv_t = greedy ? 1.0f : div(1.0f, row.temperature);
  uint64_t kmax = 0;
  sweep(logits, vocab, [&](int i, float l) { kmax = max(kmax, order_key(l, i)); });
  kmax = block_max<kThreads>(kmax, sh.warp);
  const int32_t top = int32_t(0xFFFFFFFFu - uint32_t(kmax));
  const float m = mul(logits[top], inv_t);
  uint64_t part = 0;
  uint64_t total_all = 0;  // every token's weight: only the logprob needs it
  if (p.maybe_logprobs) {
    sweep(logits, vocab, [&](int, float l) { part += weight(mul(l, inv_t), m); });
    total_all = block_sum<kThreads>(part, sh.warp);
  }

  int32_t token = top;
  if (!greedy) {
    // 4. Truncation as order-key thresholds: kept = key >= max(k_topk, k_topp) and passes min-p.
    Kept kept{inv_t, m, row.min_p, top, 0};
    if (row.top_k > 0 && row.top_k < vocab)
      kept.k_min = radix_select(logits, vocab, uint64_t(row.top_k), [](int32_t, float, uint64_t) { return uint64_t(1); }, sh);
    if (row.top_p < 1.0f) {
      part = 0;
      sweep(logits, vocab, [&](int i, float l) { part += kept(i, l, order_key(l, i)); });
      const uint64_t total = block_sum<kThreads>(part, sh.warp);
      uint64_t target = uint64_t(ceil(__dmul_rn(double(row.top_p), __ull2double_rn(total))));
      if (target > total) target = total;
      const uint64_t k_topp = radix_select(logits, vocab, target, kept, sh);
      kept.k_min = max(kept.k_min, k_topp);
    }
    // 5. The draw over the whole row.
    if (threadIdx.x == 0) sh.token = top;  // overwritten by the one thread whose range holds u
    draw_in_range<kThreads>(logits, 0, vocab, kept, sh.warp, &sh.token,
                            [&](uint64_t kept_total) { return uniform_below(kept_total, row.seed, row.step); });
    __syncthreads();
    token = sh.token;
  }
  if (threadIdx.x == 0) {
    p.token_ids[r] = token;
    if (p.maybe_logprobs) p.maybe_logprobs[r] = chosen_logprob(logits[token], inv_t, m, total_all);  // 6.
  }
}

// The split sampler's smallest slice: -1 until the first use reads FLINT_SAMPLE.
std::atomic<int>& split_min_slice() {
  static std::atomic<int> ids{-1};
  return ids;
}

constexpr int kDefaultSplitSlice = 2048;

int multiprocessors() {
  static const int sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      n = 1;
    return std::max(n, 1);
  }();
  return sms;
}

// Blocks per row: about two blocks of the grid per SM, at most kMaxSampleSplit, slices of at least min_slice ids.
SplitSampleShape split_shape(int rows, int vocab, int min_slice) {
  const int want = (2 * multiprocessors() + rows - 1) / rows;
  const int blocks = std::min({kMaxSampleSplit, want, (vocab + min_slice - 1) / min_slice});
  if (blocks < 2) return {};
  const int slice = ((vocab + blocks - 1) / blocks + 3) / 4 * 4;
  return {(vocab + slice - 1) / slice, slice};
}

}  // namespace

int sample_split_min_slice() {
  int ids = split_min_slice().load(std::memory_order_relaxed);
  if (ids < 0) {
    // "split", or "split:N" for slices of at least N ids (tests on small vocabularies, measuring); else off.
    const char* v = std::getenv("FLINT_SAMPLE");
    int want = 0;
    if (v && std::strcmp(v, "split") == 0) want = kDefaultSplitSlice;
    if (v && std::strncmp(v, "split:", 6) == 0) {
      char* end = nullptr;
      const long n = std::strtol(v + 6, &end, 10);
      if (end != v + 6 && *end == '\0' && n >= 1 && n <= (1 << 24)) want = (int(n) + 3) / 4 * 4;
    }
    int expected = -1;
    split_min_slice().compare_exchange_strong(expected, want);
    ids = split_min_slice().load(std::memory_order_relaxed);
  }
  return ids;
}

void set_sample_split_min_slice(int ids) {
  split_min_slice().store(ids <= 0 ? 0 : (ids + 3) / 4 * 4, std::memory_order_relaxed);
}

size_t sample_workspace_bytes(int num_rows) {  // a batch of 2 · SMs rows or more is never split
  return split_sample_workspace_bytes(std::min(num_rows, 2 * multiprocessors() - 1));
}

int sample_blocks_per_row(int num_rows, int vocab) {
  const int min_slice = sample_split_min_slice();
  return min_slice > 0 && num_rows > 0 && vocab > 0 ? split_shape(num_rows, vocab, min_slice).blocks : 1;
}

cudaError_t sample(const SampleParams& p, cudaStream_t stream, std::string* error) {
  if (std::string e = sample_params_error(p); !e.empty()) {
    if (error) *error = std::move(e);
    return cudaErrorInvalidValue;
  }
  if (p.num_rows == 0) return cudaSuccess;
  if (p.maybe_workspace && reinterpret_cast<uintptr_t>(p.maybe_workspace) % 16 != 0) {
    if (error) *error = "sampling: the workspace must be 16-byte aligned";
    return cudaErrorInvalidValue;
  }
  if (const int min_slice = sample_split_min_slice();
      min_slice > 0 && p.maybe_workspace && p.workspace_bytes >= split_sample_workspace_bytes(p.num_rows)) {
    if (const SplitSampleShape shape = split_shape(p.num_rows, p.vocab, min_slice); shape.blocks >= 2)
      return launch_split_sample(p, shape, stream);
  }
  return launch_kernel(sample_kernel, dim3(unsigned(p.num_rows)), dim3(kThreads), 0, stream, p);
}

}  // namespace flint::cuda
