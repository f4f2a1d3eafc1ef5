// The split sampler (kernels/cuda/sampling_split.h): a row's logits over several blocks, one stage of the row's
// work per launch, for the small batches where one block per row leaves most SMs idle. It computes what
// sample_kernel (sampling.cu) computes, in the same integer sums and order keys, so it picks the same token.
//
// A row's stages, each one kernel launch over all of the row's blocks (its slices are contiguous ranges of ids):
//   kMax     the penalties on the slice, then the largest order key (atomicMax): the top token and m;
//   kSumAll  every token's weight summed, for the logprob of a greedy row;
//   kTopK    a radix pass of top-k's select (counts), one per launch, 8-bit digits from the top;
//   kTopPSum the kept weight summed (after top-k and min-p): top-p's target;
//   kTopP    a radix pass of top-p's select (weights);
//   kDraw    each slice's kept weight; the draw, and the scan of the slice it lands in;
//   kDone.
// The first stage that sweeps the row after kMax also sums every token's weight when the row wants a logprob.
// Each block adds its share to the row's state in global memory (integer atomics: exact in any order), then the
// last block of the row to arrive (a __threadfence, then an arrival counter) finishes the stage: it picks the
// radix digit, or the top token, or the draw, and sets the next stage. A pass that leaves at most kListCap
// candidates is followed by one that lists them in global memory; the last block of that pass runs the remaining
// digits over the list alone. The host queues as many launches as the longest row can need (split_stages); a
// row that is done returns at once.
#include "kernels/cuda/sampling_split.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/sampling_common.cuh"

namespace flint::cuda {
namespace {

using namespace flint::sampling;
using namespace sample_detail;

constexpr int kThreads = kSplitSampleThreads;
constexpr int kWarps = kThreads / 32;

enum Stage : unsigned { kMax = 0, kSumAll, kTopK, kTopPSum, kTopP, kDraw, kDone };
enum Flags : unsigned { kTotalPending = 1, kCollect = 2 };

// A row's state between launches. Zeroed by the launcher before the first stage (so stage kMax, pass 0).
struct alignas(16) RowState {
  unsigned long long weight[256];  // the current radix pass's histogram, summed over the row's blocks
  unsigned int count[256];
  unsigned long long kmax;       // kMax: the largest order key
  unsigned long long total_all;  // every token's weight (the logprob)
  unsigned long long kept_sum;   // kTopPSum: the kept weight
  unsigned long long prefix;     // the select's digits chosen so far
  unsigned long long remaining;  // what remains of its target
  unsigned long long k_min;      // the top-k threshold, then the larger of it and top-p's
  unsigned int stage, pass;      // pass: the digit a select's next launch histograms (7 the top)
  unsigned int flags;
  unsigned int arrived;          // blocks of the current launch done with their share
  unsigned int list_len;         // candidates listed by a kCollect pass
  int32_t top;
  float m;
};

// The workspace: the rows' states, then their candidate lists, then each slice's kept weight for the draw.
struct Workspace {
  RowState* state;
  unsigned long long* list_key;     // (rows, kListCap)
  unsigned long long* list_weight;  // (rows, kListCap)
  unsigned long long* slice_mass;   // (rows, kMaxSampleSplit)
};

size_t align16(size_t n) { return (n + 15) / 16 * 16; }

Workspace carve(void* base, int rows) {
  uint8_t* b = static_cast<uint8_t*>(base);
  Workspace w;
  w.state = reinterpret_cast<RowState*>(b);
  b += align16(sizeof(RowState) * size_t(rows));
  w.list_key = reinterpret_cast<unsigned long long*>(b);
  b += size_t(rows) * kListCap * 8;
  w.list_weight = reinterpret_cast<unsigned long long*>(b);
  b += size_t(rows) * kListCap * 8;
  w.slice_mass = reinterpret_cast<unsigned long long*>(b);
  return w;
}

struct SplitShared {
  Hist<kWarps> h;
  unsigned long long warp[kWarps];
  Pick pick;
  int last;
  int token;
  int hit;                 // kDraw: the slice the draw lands in (-1: none)
  unsigned long long u;    // and where in it
};

// The stage after kMax (or after a finished select), by what the row asks for.
__device__ unsigned stage_after(unsigned done, const SampleRow& row, int vocab) {
  const bool top_k = row.top_k > 0 && row.top_k < vocab, top_p = row.top_p < 1.0f;
  if (done == kMax && top_k) return kTopK;
  if ((done == kMax || done == kTopK) && top_p) return kTopPSum;
  return kDraw;
}

// The row's token (and logprob) written: by thread 0 of the finishing block.
__device__ void finish_row(const SampleParams& p, int r, RowState& st, int32_t token, float inv_t,
                           const float* logits) {
  p.token_ids[r] = token;
  if (p.maybe_logprobs) p.maybe_logprobs[r] = chosen_logprob(__ldcg(&logits[token]), inv_t, st.m, __ldcg(&st.total_all));
  st.stage = kDone;
}

// The rest of a select whose candidates are listed: digits d - 1 down to 0 over the list, by the last block alone.
__device__ void select_on_list(const unsigned long long* keys, const unsigned long long* weights, unsigned len, int d,
                               uint64_t& prefix, uint64_t& remaining, SplitShared& sh) {
  for (--d; d >= 0; --d) {
    const int shift = 8 * d;
    const uint64_t hi_mask = higher_digits_mask(d);
    for (int b = threadIdx.x; b < 256; b += kThreads) sh.h.weight[b] = 0, sh.h.count[b] = 0;
    __syncthreads();
    for (unsigned j = threadIdx.x; j < len; j += kThreads) {
      const uint64_t key = __ldcg(&keys[j]);
      if ((key & hi_mask) != prefix) continue;
      const uint32_t digit = uint32_t(key >> shift) & 255u;
      add_u64(&sh.h.weight[digit], __ldcg(&weights[j]));
      atomicAdd(&sh.h.count[digit], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) pick_digit(sh.h, remaining, sh.pick);
    __syncthreads();
    prefix |= uint64_t(sh.pick.digit) << shift;
    remaining = sh.pick.remaining;
    __syncthreads();
  }
}

// One stage of every row that is not done: grid (blocks per row, rows), `slice` ids per block (a multiple of 4).
__global__ void __launch_bounds__(kThreads) sample_split_kernel(const SampleParams p, const Workspace w, const int slice) {
  pdl_begin();
  __shared__ SplitShared sh;
  const int g = blockIdx.x, r = blockIdx.y, blocks = gridDim.x;
  RowState& st = w.state[r];
  const unsigned stage = st.stage;
  if (stage == kDone) return;
  const SampleRow row = p.rows[r];
  float* logits = p.logits + int64_t(r) * p.ld_logits;
  const int vocab = p.vocab, lo = min(vocab, g * slice), hi = min(vocab, lo + slice);
  const bool greedy = row.temperature == 0.0f;
  const float inv_t = greedy ? 1.0f : div(1.0f, row.temperature);
  const Kept kept{inv_t, st.m, row.min_p, st.top, st.k_min};
  const unsigned flags = st.flags;
  const bool sum_all = stage == kSumAll || (flags & kTotalPending);
  const bool collect = flags & kCollect;  // this pass lists its candidates
  const int d = int(st.pass);

  // This block's share.
  uint64_t all = 0, part = 0;  // every token's weight; the stage's own sum
  if (stage == kMax) {
    apply_penalties<kThreads>(p, r, row, logits, lo, hi);
    uint64_t kmax = 0;
    sweep_range<kThreads>(logits, lo, hi, [&](int i, float l) { kmax = max(kmax, order_key(l, i)); });
    kmax = block_max<kThreads>(kmax, sh.warp);
    if (threadIdx.x == 0) atomicMax(&st.kmax, (unsigned long long)kmax);
  } else if (stage == kTopK || stage == kTopP) {
    const int shift = 8 * d;
    const uint64_t hi_mask = higher_digits_mask(d), prefix = st.prefix;
    for (int b = threadIdx.x; b < 256; b += kThreads) sh.h.weight[b] = 0, sh.h.count[b] = 0;
    __syncthreads();
    DigitCache cache;
    sweep_range<kThreads>(logits, lo, hi, [&](int i, float l) {
      if (sum_all) all += weight(mul(l, inv_t), kept.m);
      const uint64_t key = order_key(l, i);
      if ((key & hi_mask) != prefix) return;
      const uint64_t wt = stage == kTopK ? 1 : kept(i, l, key);
      if (wt == 0) return;
      if (collect) {  // at most kListCap of these in the row: the pass before counted them
        const unsigned slot = atomicAdd(&st.list_len, 1u);
        w.list_key[int64_t(r) * kListCap + slot] = key;
        w.list_weight[int64_t(r) * kListCap + slot] = wt;
      }
      cache.add(uint32_t(key >> shift) & 255u, wt, sh.h);
    });
    cache.flush(sh.h);
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += kThreads)
      if (sh.h.count[b]) {
        atomicAdd(&st.weight[b], sh.h.weight[b]);
        atomicAdd(&st.count[b], sh.h.count[b]);
      }
  } else {  // kSumAll, kTopPSum, kDraw: sums over the slice
    sweep_range<kThreads>(logits, lo, hi, [&](int i, float l) {
      if (sum_all) all += weight(mul(l, inv_t), kept.m);
      if (stage != kSumAll) part += kept(i, l, order_key(l, i));
    });
    part = block_sum<kThreads>(part, sh.warp);
    if (threadIdx.x == 0) {
      if (stage == kTopPSum) atomicAdd(&st.kept_sum, (unsigned long long)part);
      if (stage == kDraw) w.slice_mass[int64_t(r) * kMaxSampleSplit + g] = part;
    }
  }
  if (sum_all) {
    all = block_sum<kThreads>(all, sh.warp);
    if (threadIdx.x == 0) atomicAdd(&st.total_all, (unsigned long long)all);
  }

  // The last block of the row to arrive finishes the stage.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) sh.last = atomicAdd(&st.arrived, 1u) == unsigned(blocks - 1);
  __syncthreads();
  if (!sh.last) return;
  __threadfence();
  if (threadIdx.x == 0) st.arrived = 0, st.flags &= ~unsigned(kTotalPending);

  if (stage == kMax) {
    if (threadIdx.x == 0) {
      const uint64_t kmax = __ldcg(&st.kmax);
      const int32_t top = int32_t(0xFFFFFFFFu - uint32_t(kmax));
      st.top = top;
      st.m = mul(__ldcg(&logits[top]), inv_t);
      if (greedy) {
        if (p.maybe_logprobs) st.stage = kSumAll;
        else finish_row(p, r, st, top, inv_t, logits);
      } else {
        if (p.maybe_logprobs) st.flags |= kTotalPending;
        const unsigned next = stage_after(kMax, row, vocab);
        st.stage = next, st.pass = 7, st.prefix = 0;
        if (next == kTopK) st.remaining = uint64_t(row.top_k);
      }
    }
    return;
  }
  if (stage == kSumAll) {
    if (threadIdx.x == 0) finish_row(p, r, st, st.top, inv_t, logits);
    return;
  }
  if (stage == kTopPSum) {
    if (threadIdx.x == 0) {
      const uint64_t total = __ldcg(&st.kept_sum);
      uint64_t target = uint64_t(ceil(__dmul_rn(double(row.top_p), __ull2double_rn(total))));
      if (target > total) target = total;
      st.stage = kTopP, st.pass = 7, st.prefix = 0, st.remaining = target, st.flags &= ~unsigned(kCollect);
    }
    return;
  }
  if (stage == kTopK || stage == kTopP) {
    for (int b = threadIdx.x; b < 256; b += kThreads) {
      sh.h.weight[b] = __ldcg(&st.weight[b]), sh.h.count[b] = __ldcg(&st.count[b]);
      st.weight[b] = 0, st.count[b] = 0;  // for the next pass
    }
    __syncthreads();
    if (threadIdx.x < 32) pick_digit(sh.h, st.remaining, sh.pick);
    __syncthreads();
    uint64_t prefix = st.prefix | (uint64_t(sh.pick.digit) << (8 * d)), remaining = sh.pick.remaining;
    const unsigned candidates = sh.pick.count;
    __syncthreads();
    if (collect) {
      select_on_list(w.list_key + int64_t(r) * kListCap, w.list_weight + int64_t(r) * kListCap,
                     __ldcg(&st.list_len), d, prefix, remaining, sh);
    }
    if (threadIdx.x == 0) {
      if (collect || d == 0) {  // the select is done: prefix is its key
        if (stage == kTopK) st.k_min = prefix;
        else st.k_min = max((uint64_t)st.k_min, prefix);
        st.stage = stage_after(stage, row, vocab);
        st.flags &= ~unsigned(kCollect);
      } else {
        st.prefix = prefix, st.remaining = remaining, st.pass = unsigned(d - 1);
        if (candidates <= unsigned(kListCap)) st.flags |= kCollect, st.list_len = 0;
      }
    }
    return;
  }
  // kDraw: the slices' kept weights in id order; u in [0, kept total); the slice that holds it is scanned.
  if (threadIdx.x == 0) {
    uint64_t total = 0;
    for (int b = 0; b < blocks; ++b) total += __ldcg(&w.slice_mass[int64_t(r) * kMaxSampleSplit + b]);
    const uint64_t u = uniform_below(total, row.seed, row.step);
    sh.hit = -1, sh.token = st.top;  // no slice holds u when the kept total is 0: the top token
    uint64_t before = 0;
    for (int b = 0; b < blocks; ++b) {
      const uint64_t mass = __ldcg(&w.slice_mass[int64_t(r) * kMaxSampleSplit + b]);
      if (before <= u && u < before + mass) {
        sh.hit = b, sh.u = u - before;
        break;
      }
      before += mass;
    }
  }
  __syncthreads();
  const int hit = sh.hit;
  const uint64_t u_in_slice = sh.u;
  if (hit >= 0) {
    const int hlo = hit * slice, hhi = min(vocab, hlo + slice);
    draw_in_range<kThreads>(logits, hlo, hhi, kept, sh.warp, &sh.token, [&](uint64_t) { return u_in_slice; });
  }
  __syncthreads();
  if (threadIdx.x == 0) finish_row(p, r, st, sh.token, inv_t, logits);
}

}  // namespace

size_t split_sample_workspace_bytes(int num_rows) {
  if (num_rows <= 0) return 0;
  return align16(sizeof(RowState) * size_t(num_rows)) + size_t(num_rows) * (2 * kListCap + kMaxSampleSplit) * 8;
}

int split_sample_stages(const SampleRow* maybe_host_rows, int num_rows, int vocab, bool logprobs) {
  constexpr int kMost = 1 + 8 + 1 + 8 + 1;  // kMax, top-k's passes, kTopPSum, top-p's passes, kDraw
  if (!maybe_host_rows) return kMost;
  int most = 1;
  for (int r = 0; r < num_rows; ++r) {
    const SampleRow& row = maybe_host_rows[r];
    int n = 1;
    if (row.temperature == 0.0f) {
      n += logprobs ? 1 : 0;  // kSumAll
    } else {
      if (row.top_k > 0 && row.top_k < vocab) n += 8;
      if (row.top_p < 1.0f) n += 9;
      n += 1;
    }
    most = std::max(most, n);
  }
  return most;
}

cudaError_t launch_split_sample(const SampleParams& p, const SplitSampleShape& shape, cudaStream_t stream) {
  const Workspace w = carve(p.maybe_workspace, p.num_rows);
  if (cudaError_t e = cudaMemsetAsync(w.state, 0, sizeof(RowState) * size_t(p.num_rows), stream); e != cudaSuccess)
    return e;
  const int stages = split_sample_stages(p.maybe_host_rows, p.num_rows, p.vocab, p.maybe_logprobs != nullptr);
  for (int s = 0; s < stages; ++s)
    if (cudaError_t e = launch_kernel(sample_split_kernel, dim3(unsigned(shape.blocks), unsigned(p.num_rows)),
                                      dim3(kThreads), 0, stream, p, w, shape.slice);
        e != cudaSuccess)
      return e;
  return cudaSuccess;
}

}  // namespace flint::cuda
