// Sampling on the GPU (kernels/cuda/sampling.h): one block of kSampleThreads per row; semantics and the shared
// per-value arithmetic in kernels/sampling_params.h, the CPU twin in kernels/cpu/sampling.cpp. Every sum is of
// integer weights (exact, so the same in any order), every float operation an explicit __f*_rn intrinsic (as the
// twin rounds them), so kernel and twin pick the same token.
#include "kernels/cuda/sampling.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/launch.cuh"

namespace flint::cuda {
namespace {

using namespace flint::sampling;

constexpr int kThreads = kSampleThreads;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xFFFFFFFFu;

// Candidates a radix select keeps in shared memory once few enough are left (radix_select): 32 KiB.
constexpr int kListCap = 2048;

struct Shared {
  unsigned long long hist[256];  // a radix pass's histogram: counts or weights per 8-bit digit
  unsigned int count[256];       // and how many candidates each digit has
  unsigned long long warp[kWarps];
  unsigned long long pick[2];    // the chosen digit and what remains of the target
  unsigned int picked_count;     // candidates with the chosen digit
  unsigned int list_len;
  unsigned long long list_key[kListCap], list_weight[kListCap];
  unsigned long long lane_value[kWarps][32];  // warp_hist_add's per-lane values
  int token;
};

// f(i, logits[i]) for this thread's share of the row's ids, in some order (every use below is a max or an exact
// integer sum, so the order does not change a result). One SM sweeps a whole row, and a sweep is bound by the
// latency of its loads: a 16-byte-aligned row is read as float4s, two in flight per thread, so a thread has 8
// logits on the way where plain loads had one. Plain loads (not __ldg): the penalties wrote the row in this kernel.
template <class F>
__device__ __forceinline__ void sweep(const float* row, int vocab, F&& f) {
  int i = threadIdx.x;
  if (reinterpret_cast<uintptr_t>(row) % 16 == 0) {
    const float4* r4 = reinterpret_cast<const float4*>(row);
    const int n4 = vocab / 4;
    int j = threadIdx.x;
    for (; j + kThreads < n4; j += 2 * kThreads) {
      const float4 a = r4[j], b = r4[j + kThreads];
      const int ia = 4 * j, ib = 4 * (j + kThreads);
      f(ia, a.x), f(ia + 1, a.y), f(ia + 2, a.z), f(ia + 3, a.w);
      f(ib, b.x), f(ib + 1, b.y), f(ib + 2, b.z), f(ib + 3, b.w);
    }
    if (j < n4) {
      const float4 a = r4[j];
      f(4 * j, a.x), f(4 * j + 1, a.y), f(4 * j + 2, a.z), f(4 * j + 3, a.w);
    }
    i = 4 * n4 + int(threadIdx.x);
  }
  for (; i < vocab; i += kThreads) f(i, row[i]);
}

__device__ uint64_t block_sum(uint64_t v, Shared& sh) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(kFull, v, off);
  if (threadIdx.x % 32 == 0) sh.warp[threadIdx.x / 32] = v;
  __syncthreads();
  uint64_t total = 0;
  for (int w = 0; w < kWarps; ++w) total += sh.warp[w];  // every thread reads the same 32 values: no broadcast
  __syncthreads();
  return total;
}

__device__ uint64_t block_max(uint64_t v, Shared& sh) {
  for (int off = 16; off > 0; off /= 2) v = max(v, (uint64_t)__shfl_xor_sync(kFull, v, off));
  if (threadIdx.x % 32 == 0) sh.warp[threadIdx.x / 32] = v;
  __syncthreads();
  uint64_t best = 0;
  for (int w = 0; w < kWarps; ++w) best = max(best, (uint64_t)sh.warp[w]);
  __syncthreads();
  return best;
}

// *p += v for a shared 64-bit counter, as two 32-bit atomic adds (the low word's carry goes into the high word):
// sm_90 has no 64-bit shared-memory atomic add, and atomicAdd on one compiles to a compare-and-swap loop
// (ATOMS.CAST.SPIN.64), which retries under contention. Once every add has landed the two words hold the exact
// sum (mod 2^64); the counters are only read after a __syncthreads.
__device__ __forceinline__ void add_u64(unsigned long long* p, uint64_t v) {
  unsigned* word = reinterpret_cast<unsigned*>(p);  // little-endian: word[0] low, word[1] high
  const unsigned lo = unsigned(v), old = atomicAdd(&word[0], lo);
  const unsigned hi = unsigned(v >> 32) + (old + lo < old ? 1u : 0u);
  if (hi) atomicAdd(&word[1], hi);
}

// Adds w to sh.hist[digit] and c to sh.count[digit] for every lane with c > 0, with one shared atomic per distinct
// digit of the warp. Called by all 32 lanes together.
__device__ __forceinline__ void warp_hist_add(uint32_t digit, uint64_t w, uint32_t c, Shared& sh) {
  const bool has = c != 0;
  if (!__any_sync(kFull, has)) return;
  const unsigned lane = threadIdx.x % 32;
  const unsigned peers = __match_any_sync(kFull, has ? digit : 256u);
  const bool leader = has && lane == unsigned(__ffs(int(peers)) - 1);
  unsigned long long* mine = sh.lane_value[threadIdx.x / 32];
  unsigned long long sum_w = 0, sum_c = 0;
  mine[lane] = w;
  __syncwarp();
  if (leader)
    for (unsigned m = peers; m; m &= m - 1) sum_w += mine[__ffs(int(m)) - 1];
  __syncwarp();
  mine[lane] = c;
  __syncwarp();
  if (leader) {
    for (unsigned m = peers; m; m &= m - 1) sum_c += mine[__ffs(int(m)) - 1];
    add_u64(&sh.hist[digit], sum_w);
    atomicAdd(&sh.count[digit], unsigned(sum_c));
  }
  __syncwarp();
}

// A thread's running weight and count for the last kSlots digits it met in a radix pass, added to the shared
// histogram when its slot is reused and at the end of the pass (flush). A pass over a whole row puts almost every
// token under a handful of top digits, and 1024 threads adding to the same few shared addresses token by token
// serialise: one top-k row at vocab 151936 took 1.5 ms on the H200 that way (one atomic per run of equal digits).
// Four slots do not fit the 64 registers a thread has at 1024 threads: ptxas keeps part of the cache on the
// thread's stack (88 bytes, in L1).
struct DigitCache {
  static constexpr int kSlots = 4;
  uint32_t digit[kSlots], count[kSlots];
  uint64_t weight[kSlots];
  uint32_t next = 0;  // the slot to reuse next (round robin)
  __device__ DigitCache() {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) digit[s] = 256u, count[s] = 0, weight[s] = 0;
  }
  __device__ __forceinline__ void add(uint32_t d, uint64_t w, Shared& sh) {
    bool hit = false;
#pragma unroll
    for (int s = 0; s < kSlots; ++s)
      if (digit[s] == d) weight[s] += w, count[s] += 1, hit = true;
    if (hit) return;
#pragma unroll
    for (int s = 0; s < kSlots; ++s)
      if (uint32_t(s) == next) {
        if (count[s]) {
          add_u64(&sh.hist[digit[s]], weight[s]);
          atomicAdd(&sh.count[digit[s]], count[s]);
        }
        digit[s] = d, weight[s] = w, count[s] = 1;
      }
    next = (next + 1) % kSlots;
  }
  __device__ __forceinline__ void flush(Shared& sh) {  // every lane of the warp together
#pragma unroll
    for (int s = 0; s < kSlots; ++s) warp_hist_add(digit[s], weight[s], count[s], sh);
  }
};

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
    const uint64_t hi_mask = d == 7 ? 0 : ~0ull << (shift + 8);
    const bool collect = !listed && candidates <= uint32_t(kListCap);
    for (int b = threadIdx.x; b < 256; b += kThreads) sh.hist[b] = 0, sh.count[b] = 0;
    if (threadIdx.x == 0 && collect) sh.list_len = 0;
    __syncthreads();
    if (listed) {
      for (int j = threadIdx.x; j < int(sh.list_len); j += kThreads) {
        const uint64_t key = sh.list_key[j];
        if ((key & hi_mask) != prefix) continue;
        const uint32_t digit = uint32_t(key >> shift) & 255u;
        add_u64(&sh.hist[digit], sh.list_weight[j]);
        atomicAdd(&sh.count[digit], 1u);
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
        cache.add(uint32_t(key >> shift) & 255u, w, sh);
      });
      cache.flush(sh);
    }
    listed = listed || collect;
    __syncthreads();
    if (threadIdx.x < 32) {  // warp 0: lane l holds digits 255 - 8l down to 248 - 8l
      const int lane = threadIdx.x;
      uint64_t own = 0;
      for (int j = 0; j < 8; ++j) own += sh.hist[255 - 8 * lane - j];
      uint64_t incl = own;
      for (int off = 1; off < 32; off *= 2) {
        const uint64_t t = __shfl_up_sync(kFull, incl, off);
        if (lane >= off) incl += t;
      }
      const unsigned hit = __ballot_sync(kFull, incl >= remaining);
      if (hit && lane == __ffs(hit) - 1) {
        uint64_t cum = incl - own;
        for (int j = 0; j < 8; ++j) {
          const int b = 255 - 8 * lane - j;
          if (cum + sh.hist[b] >= remaining) {
            sh.pick[0] = uint64_t(b);
            sh.pick[1] = remaining - cum;
            sh.picked_count = sh.count[b];
            break;
          }
          cum += sh.hist[b];
        }
      }
    }
    __syncthreads();
    prefix |= uint64_t(sh.pick[0]) << shift;
    remaining = sh.pick[1];
    candidates = sh.picked_count;
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

  // 1. Penalties, one thread per listed id (ids distinct: no two threads write one logit).
  if (p.maybe_rep_offsets && row.repetition_penalty != 1.0f) {
    for (int j = p.maybe_rep_offsets[r] + threadIdx.x; j < p.maybe_rep_offsets[r + 1]; j += kThreads) {
      const int32_t t = p.rep_ids[j];
      if (t < 0 || t >= vocab) continue;
      const float l = logits[t];
      logits[t] = l > 0.0f ? div(l, row.repetition_penalty) : mul(l, row.repetition_penalty);
    }
  }
  __syncthreads();
  if (p.maybe_freq_offsets && (row.presence_penalty != 0.0f || row.frequency_penalty != 0.0f)) {
    for (int j = p.maybe_freq_offsets[r] + threadIdx.x; j < p.maybe_freq_offsets[r + 1]; j += kThreads) {
      const int32_t t = p.freq_ids[j];
      if (t < 0 || t >= vocab) continue;
      logits[t] = sub(logits[t], add(row.presence_penalty, mul(row.frequency_penalty, float(p.freq_counts[j]))));
    }
  }
  __syncthreads();

  // 2-3. The top token (largest key), the tempered max m, every token's weight summed.
  const bool greedy = row.temperature == 0.0f;
  const float inv_t = greedy ? 1.0f : div(1.0f, row.temperature);
  uint64_t kmax = 0;
  sweep(logits, vocab, [&](int i, float l) { kmax = max(kmax, order_key(l, i)); });
  kmax = block_max(kmax, sh);
  const int32_t top = int32_t(0xFFFFFFFFu - uint32_t(kmax));
  const float m = mul(logits[top], inv_t);
  uint64_t part = 0;
  uint64_t total_all = 0;  // every token's weight: only the logprob needs it
  if (p.maybe_logprobs) {
    sweep(logits, vocab, [&](int, float l) { part += weight(mul(l, inv_t), m); });
    total_all = block_sum(part, sh);
  }

  int32_t token = top;
  if (!greedy) {
    // 4. Truncation as order-key thresholds: kept = key >= max(k_topk, k_topp) and passes min-p.
    const float min_p = row.min_p;
    auto passes_min_p = [&](int32_t i, float l) {
      return i == top || min_p == 0.0f || sample_exp(sub(mul(l, inv_t), m)) >= min_p;
    };
    uint64_t k_min = 0;
    if (row.top_k > 0 && row.top_k < vocab)
      k_min = radix_select(logits, vocab, uint64_t(row.top_k), [](int32_t, float, uint64_t) { return uint64_t(1); }, sh);
    auto kept_weight = [&](int32_t i, float l, uint64_t key) -> uint64_t {
      return key >= k_min && passes_min_p(i, l) ? weight(mul(l, inv_t), m) : 0;
    };
    if (row.top_p < 1.0f) {
      part = 0;
      sweep(logits, vocab, [&](int i, float l) { part += kept_weight(i, l, order_key(l, i)); });
      const uint64_t total = block_sum(part, sh);
      uint64_t target = uint64_t(ceil(__dmul_rn(double(row.top_p), __ull2double_rn(total))));
      if (target > total) target = total;
      const uint64_t k_topp = radix_select(logits, vocab, target, kept_weight, sh);
      k_min = max(k_min, k_topp);
    }
    // 5. The draw: the kept weights laid out in id order, thread t's contiguous share of ids after threads < t.
    const int chunk = (vocab + kThreads - 1) / kThreads;
    const int begin = min(vocab, int(threadIdx.x) * chunk), end = min(vocab, begin + chunk);
    uint64_t own = 0;
    for (int i = begin; i < end; ++i) own += kept_weight(i, logits[i], order_key(logits[i], i));
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    uint64_t incl = own;
    for (int off = 1; off < 32; off *= 2) {
      const uint64_t t = __shfl_up_sync(kFull, incl, off);
      if (lane >= off) incl += t;
    }
    if (lane == 31) sh.warp[warp] = incl;
    if (threadIdx.x == 0) sh.token = top;  // overwritten below by the one thread whose range holds u
    __syncthreads();
    uint64_t before = incl - own, kept_total = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) before += sh.warp[w];
      kept_total += sh.warp[w];
    }
    const uint64_t u = uniform_below(kept_total, row.seed, row.step);
    if (before <= u && u < before + own) {  // exactly one thread's range holds u
      uint64_t acc = before;
      for (int i = begin; i < end; ++i) {
        acc += kept_weight(i, logits[i], order_key(logits[i], i));
        if (u < acc) {
          sh.token = i;
          break;
        }
      }
    }
    __syncthreads();
    token = sh.token;
  }
  if (threadIdx.x == 0) {
    p.token_ids[r] = token;
    if (p.maybe_logprobs) {
      // 6. log-softmax of the chosen token: s - m - log(Σ q · 2^-40).
      const double lse_shift = log(__ull2double_rn(total_all)) - double(kSampleWeightShift) * 0.69314718055994530942;
      p.maybe_logprobs[r] = float(double(sub(mul(logits[token], inv_t), m)) - lse_shift);
    }
  }
}

}  // namespace

cudaError_t sample(const SampleParams& p, cudaStream_t stream, std::string* error) {
  if (std::string e = sample_params_error(p); !e.empty()) {
    if (error) *error = std::move(e);
    return cudaErrorInvalidValue;
  }
  if (p.num_rows == 0) return cudaSuccess;
  return launch_kernel(sample_kernel, dim3(unsigned(p.num_rows)), dim3(kThreads), 0, stream, p);
}

}  // namespace flint::cuda
