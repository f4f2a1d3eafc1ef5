// What the two samplers share (kernels/cuda/sampling.cu: a block per row; sampling_split.cu: a row over several
// blocks): the sweep over a range of a row's logits, block reductions, the shared radix histogram and how a pass
// picks its digit. Every sum is of integer weights, so none of this depends on the order values arrive in.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/sampling_params.h"

namespace flint::cuda::sample_detail {

constexpr unsigned kFull = 0xFFFFFFFFu;

// Candidates a radix select keeps once few enough are left (a pass leaving at most this many is followed by one that
// lists them, and the passes after it read the list instead of the row).
constexpr int kListCap = 2048;

// f(i, row[i]) for every i in [lo, hi), this thread's share of them (T threads), in some order. When row + lo is
// 16-byte aligned the range is read as float4s, two in flight per thread, so a thread has 8 logits on the way; the
// tail and a misaligned range take plain loads. Plain loads, not __ldg: the penalties may have written the row in
// the same kernel.
template <int T, class F>
__device__ __forceinline__ void sweep_range(const float* row, int lo, int hi, F&& f) {
  int i = lo + int(threadIdx.x);
  if (reinterpret_cast<uintptr_t>(row + lo) % 16 == 0) {
    const float4* r4 = reinterpret_cast<const float4*>(row + lo);
    const int n4 = (hi - lo) / 4;
    int j = threadIdx.x;
    for (; j + T < n4; j += 2 * T) {
      const float4 a = r4[j], b = r4[j + T];
      const int ia = lo + 4 * j, ib = lo + 4 * (j + T);
      f(ia, a.x), f(ia + 1, a.y), f(ia + 2, a.z), f(ia + 3, a.w);
      f(ib, b.x), f(ib + 1, b.y), f(ib + 2, b.z), f(ib + 3, b.w);
    }
    if (j < n4) {
      const float4 a = r4[j];
      const int ia = lo + 4 * j;
      f(ia, a.x), f(ia + 1, a.y), f(ia + 2, a.z), f(ia + 3, a.w);
    }
    i = lo + 4 * n4 + int(threadIdx.x);
  }
  for (; i < hi; i += T) f(i, row[i]);
}

// Block-wide sum and max of one value per thread; `scratch` holds T / 32 values. Every thread gets the result.
template <int T>
__device__ uint64_t block_sum(uint64_t v, unsigned long long* scratch) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(kFull, v, off);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  uint64_t total = 0;
  for (int w = 0; w < T / 32; ++w) total += scratch[w];  // every thread reads the same values: a broadcast
  __syncthreads();
  return total;
}

template <int T>
__device__ uint64_t block_max(uint64_t v, unsigned long long* scratch) {
  for (int off = 16; off > 0; off /= 2) v = max(v, (uint64_t)__shfl_xor_sync(kFull, v, off));
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  uint64_t best = 0;
  for (int w = 0; w < T / 32; ++w) best = max(best, (uint64_t)scratch[w]);
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

// A radix pass's histogram in shared memory: the weight and the number of candidates per 8-bit digit, and the
// per-lane scratch warp_hist_add gathers with (W warps).
template <int W>
struct Hist {
  unsigned long long weight[256];
  unsigned int count[256];
  unsigned long long lane_value[W][32];
};

// Adds w to h.weight[digit] and c to h.count[digit] for every lane with c > 0, with one shared atomic per distinct
// digit of the warp. Called by all 32 lanes together.
template <int W>
__device__ __forceinline__ void warp_hist_add(uint32_t digit, uint64_t w, uint32_t c, Hist<W>& h) {
  const bool has = c != 0;
  if (!__any_sync(kFull, has)) return;
  const unsigned lane = threadIdx.x % 32;
  const unsigned peers = __match_any_sync(kFull, has ? digit : 256u);
  const bool leader = has && lane == unsigned(__ffs(int(peers)) - 1);
  unsigned long long* mine = h.lane_value[threadIdx.x / 32];
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
    add_u64(&h.weight[digit], sum_w);
    atomicAdd(&h.count[digit], unsigned(sum_c));
  }
  __syncwarp();
}

// A thread's running weight and count for the last kSlots digits it met in a radix pass, added to the shared
// histogram when its slot is reused and at the end of the pass (flush). A pass over a whole row puts almost every
// token under a handful of top digits, and threads adding to the same few shared addresses token by token
// serialise: one top-k row at vocab 151936 took 1.5 ms on the H200 that way (one atomic per run of equal digits).
// At 1024 threads four slots do not fit the 64 registers a thread has: ptxas keeps part of the cache on the
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
  template <int W>
  __device__ __forceinline__ void add(uint32_t d, uint64_t w, Hist<W>& h) {
    bool hit = false;
#pragma unroll
    for (int s = 0; s < kSlots; ++s)
      if (digit[s] == d) weight[s] += w, count[s] += 1, hit = true;
    if (hit) return;
#pragma unroll
    for (int s = 0; s < kSlots; ++s)
      if (uint32_t(s) == next) {
        if (count[s]) {
          add_u64(&h.weight[digit[s]], weight[s]);
          atomicAdd(&h.count[digit[s]], count[s]);
        }
        digit[s] = d, weight[s] = w, count[s] = 1;
      }
    next = (next + 1) % kSlots;
  }
  template <int W>
  __device__ __forceinline__ void flush(Hist<W>& h) {  // every lane of the warp together
#pragma unroll
    for (int s = 0; s < kSlots; ++s) warp_hist_add(digit[s], weight[s], count[s], h);
  }
};

// One radix pass's choice, made by warp 0 (threads 0..31 together) from a finished histogram: the digit b (largest
// first) at which the running weight reaches `remaining`, what remains of it within b, and b's candidate count.
// Lane l holds digits 255 - 8l down to 248 - 8l. When no digit reaches it (remaining above the histogram's total,
// which the selects never ask), nothing is written.
struct Pick {
  unsigned long long digit, remaining;
  unsigned int count;
};
template <int W>
__device__ __forceinline__ void pick_digit(const Hist<W>& h, uint64_t remaining, Pick& out) {
  const int lane = threadIdx.x;
  uint64_t own = 0;
  for (int j = 0; j < 8; ++j) own += h.weight[255 - 8 * lane - j];
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
      if (cum + h.weight[b] >= remaining) {
        out.digit = uint64_t(b);
        out.remaining = remaining - cum;
        out.count = h.count[b];
        break;
      }
      cum += h.weight[b];
    }
  }
}

// The mask of the digits above digit d (8-bit digits, d = 7 the top one) of a 64-bit order key.
__device__ __forceinline__ uint64_t higher_digits_mask(int d) { return d == 7 ? 0 : ~0ull << (8 * d + 8); }

// Step 1 of kernels/sampling_params.h on the ids in [lo, hi) of row r (T threads, one per listed id: the ids of a
// list are distinct, so no two threads write one logit): repetition, then presence and frequency. Ends with a
// __syncthreads, after which the block's reads of the row see the penalised logits.
template <int T>
__device__ void apply_penalties(const SampleParams& p, int r, const SampleRow& row, float* logits, int lo, int hi) {
  using namespace flint::sampling;
  if (p.maybe_rep_offsets && row.repetition_penalty != 1.0f) {
    for (int j = p.maybe_rep_offsets[r] + threadIdx.x; j < p.maybe_rep_offsets[r + 1]; j += T) {
      const int32_t t = p.rep_ids[j];
      if (t < lo || t >= hi) continue;
      const float l = logits[t];
      logits[t] = l > 0.0f ? div(l, row.repetition_penalty) : mul(l, row.repetition_penalty);
    }
  }
  __syncthreads();
  if (p.maybe_freq_offsets && (row.presence_penalty != 0.0f || row.frequency_penalty != 0.0f)) {
    for (int j = p.maybe_freq_offsets[r] + threadIdx.x; j < p.maybe_freq_offsets[r + 1]; j += T) {
      const int32_t t = p.freq_ids[j];
      if (t < lo || t >= hi) continue;
      logits[t] = sub(logits[t], add(row.presence_penalty, mul(row.frequency_penalty, float(p.freq_counts[j]))));
    }
  }
  __syncthreads();
}

// A token's weight once truncated (step 4): its weight if its key is at least k_min (the top-k and top-p
// thresholds) and it passes min-p, else 0.
struct Kept {
  float inv_t, m, min_p;
  int32_t top;
  uint64_t k_min;
  __device__ __forceinline__ uint64_t operator()(int32_t i, float l, uint64_t key) const {
    using namespace flint::sampling;
    const bool min_p_ok = i == top || min_p == 0.0f || sample_exp(sub(mul(l, inv_t), m)) >= min_p;
    return key >= k_min && min_p_ok ? weight(mul(l, inv_t), m) : 0;
  }
};

// The draw's scan over ids [lo, hi) (step 5), by the whole block of T threads: thread t's contiguous share of the
// ids after threads < t, the kept weights laid out in id order. u_of(range total) gives the draw's offset into the
// range; the one token whose weight covers it is written to *token (which the caller set beforehand to the token
// for a draw that lands nowhere, and reads after a __syncthreads). `scratch` holds T / 32 values.
template <int T, class U>
__device__ void draw_in_range(const float* logits, int lo, int hi, const Kept& kept, unsigned long long* scratch,
                              int* token, U&& u_of) {
  using namespace flint::sampling;
  const int chunk = (hi - lo + T - 1) / T;
  const int begin = min(hi, lo + int(threadIdx.x) * chunk), end = min(hi, begin + chunk);
  uint64_t own = 0;
  for (int i = begin; i < end; ++i) own += kept(i, logits[i], order_key(logits[i], i));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint64_t incl = own;
  for (int off = 1; off < 32; off *= 2) {
    const uint64_t t = __shfl_up_sync(kFull, incl, off);
    if (lane >= off) incl += t;
  }
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  uint64_t before = incl - own, total = 0;
  for (int w = 0; w < T / 32; ++w) {
    if (w < warp) before += scratch[w];
    total += scratch[w];
  }
  const uint64_t u = u_of(total);
  if (before <= u && u < before + own) {  // exactly one thread's range holds u
    uint64_t acc = before;
    for (int i = begin; i < end; ++i) {
      acc += kept(i, logits[i], order_key(logits[i], i));
      if (u < acc) {
        *token = i;
        break;
      }
    }
  }
}

// Step 6: the chosen token's log-softmax under the tempered, penalised, untruncated distribution,
// s - m - log(Σ q · 2^-40), from its logit and every token's weight summed.
__device__ __forceinline__ float chosen_logprob(float logit, float inv_t, float m, uint64_t total_all) {
  using namespace flint::sampling;
  const double lse_shift = log(__ull2double_rn(total_all)) - double(kSampleWeightShift) * 0.69314718055994530942;
  return float(double(sub(mul(logit, inv_t), m)) - lse_shift);
}

}  // namespace flint::cuda::sample_detail
