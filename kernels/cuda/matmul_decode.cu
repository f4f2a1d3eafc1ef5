// The decode matmul kernels (M <= 64, and the mid kernel up to 128 rows): every warp owns 16 weight rows and all
// the tokens, its weights loaded from global memory straight into tensor-core fragments; their launchers. See
// matmul.h for the design and matmul_common.cuh for the arithmetic every kernel shares.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/matmul_common.cuh"
#include "kernels/cuda/matmul_kernels.h"

namespace flint::cuda::mm {

namespace {

// ---- Decode: M <= 64. Block = 4 warps; warp = 16 weight rows × all M tokens (kTokenGroups groups of 8) over one
// K split (blockIdx.y). Weights go from global memory straight into mma fragments: each lane loads 16 bytes of
// row g and of row g + 8 per 32-value step, kUnroll steps (128 bytes) per chunk, the next chunk's loads issued
// before this chunk's mmas. Tokens are read through L1 (every warp of the block reads the same x).
//
// For M <= 16 the first chunk's weights are loaded before pdl_begin (the weights-first form of launch.cuh), so under
// PDL they are in flight while the kernel before finishes: on the H200 that took Llama-3.2-1B's decode step at
// batch 1 from 697 to 736 tokens/s. For M > 16 the same reordering made the kernel ~25% slower (M = 32: Llama-3.2-1B
// gate+up 72.5 µs against 57.3 µs), so there it waits first and its code is what it was before. (8-step chunks were
// measured too and dropped: 4-35% slower at M = 1 and 8.)
constexpr int kDecodeWarps = 4, kUnroll = 4;

// FLINT_MATMUL_AHEAD (MatmulParams::l2_ahead_bytes): one row's share of the warp's weights asked of L2 before
// pdl_begin, by one bulk prefetch: the first l2_ahead_bytes / (N·K·2) of the split's bytes [k_begin, k_end), from
// `from` (past the chunk already loaded into registers), whole 16-byte units. Under PDL the kernel's blocks are
// resident while the kernel before runs (a norm, RoPE, attention: little HBM traffic), so the weights stream then.
__device__ __forceinline__ void ahead_prefetch(const MatmulParams& p, const bf16_bits* row, bool ok, int from,
                                               int k_begin, int k_end) {
  if (!ok) return;
  const float share = fminf(1.0f, float(p.l2_ahead_bytes) / (2.0f * float(p.N) * float(p.K)));
  const int64_t end = min(int64_t(k_begin) * 2 + int64_t(share * float(k_end - k_begin) * 2.0f), int64_t(k_end) * 2);
  const int64_t begin = int64_t(from) * 2, bytes = (end - begin) / 16 * 16;  // from: a multiple of 8 values
  if (bytes >= 16) prefetch_l2(reinterpret_cast<const uint8_t*>(row) + begin, uint32_t(bytes));
}

// One warp's 16 weight rows × all M tokens over one K split. kWeightsFirst (M <= 16): the first chunk's weights are
// loaded, then pdl_begin, then the rest; else (M > 16) the kernel has waited (pdl_begin) before this runs.
template <int kTokenGroups, bool kVec, bool kWeightsFirst>
__device__ __forceinline__ void decode_warp(const MatmulParams& p, int split_len, int num_splits) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int n0 = (blockIdx.x * kDecodeWarps + warp) * 16;
  if (n0 >= p.N) return;
  const int split = blockIdx.y;
  const int k_begin = split * split_len, k_end = min(p.K, k_begin + split_len);
  const bool lo_ok = n0 + g < p.N, hi_ok = n0 + g + 8 < p.N;
  const bf16_bits* w_lo = p.w + int64_t(lo_ok ? n0 + g : 0) * p.ldw;
  const bf16_bits* w_hi = p.w + int64_t(hi_ok ? n0 + g + 8 : 0) * p.ldw;
  // Whole chunks of kUnroll steps, the next chunk's weights loaded before this chunk's mmas run, so a lane keeps
  // 128 to 256 bytes of weights in flight; then the split's remaining steps one by one. Either way each output's
  // steps run in increasing k, as in the prefill kernels.
  constexpr int kChunk = 32 * kUnroll;
  int k = k_begin;
  uint4 lo[kUnroll], hi[kUnroll];
  bool chunked = false;  // kWeightsFirst: whether the first chunk was loaded before pdl_begin
  auto load_chunk = [&](uint4 (&l)[kUnroll], uint4 (&h)[kUnroll], int at) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      l[u] = load8<kVec>(w_lo, at + 32 * u + 8 * t, k_end, lo_ok);
      h[u] = load8<kVec>(w_hi, at + 32 * u + 8 * t, k_end, hi_ok);
    }
  };
  if constexpr (kWeightsFirst) {
    chunked = k + kChunk <= k_end;
    if (chunked) load_chunk(lo, hi, k);  // weights only before pdl_begin: nothing writes them in a step
    if (kVec && p.l2_ahead_bytes > 0 && t < 2)  // lane t = 0 its row g, t = 1 its row g + 8
      ahead_prefetch(p, t == 0 ? w_lo : w_hi, t == 0 ? lo_ok : hi_ok, chunked ? k + kChunk : k, k_begin, k_end);
    pdl_begin();
  }
  const bf16_bits* x_row[kTokenGroups];
  bool x_ok[kTokenGroups];
#pragma unroll
  for (int j = 0; j < kTokenGroups; ++j) {
    x_ok[j] = j * 8 + g < p.M;
    x_row[j] = p.x + int64_t(x_ok[j] ? j * 8 + g : 0) * p.ldx;
  }
  float acc[kTokenGroups][4] = {};
  auto step = [&](int k, const uint4& lo, const uint4& hi) {  // one 32-value step for every token group
    uint4 xv[kTokenGroups];
#pragma unroll
    for (int j = 0; j < kTokenGroups; ++j) xv[j] = load8<kVec>(x_row[j], k + 8 * t, k_end, x_ok[j]);
#pragma unroll
    for (int j = 0; j < kTokenGroups; ++j) mma_step32(acc[j], lo, hi, xv[j]);
  };
  if (kWeightsFirst ? chunked : k + kChunk <= k_end) {
    if constexpr (!kWeightsFirst) load_chunk(lo, hi, k);
    for (;;) {
      const int k_next = k + kChunk;
      const bool more = k_next + kChunk <= k_end;
      uint4 next_lo[kUnroll], next_hi[kUnroll];
      if (more) load_chunk(next_lo, next_hi, k_next);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) step(k + 32 * u, lo[u], hi[u]);
      k = k_next;
      if (!more) break;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) lo[u] = next_lo[u], hi[u] = next_hi[u];
    }
  }
  for (; k < k_end; k += 32)
    step(k, load8<kVec>(w_lo, k + 8 * t, k_end, lo_ok), load8<kVec>(w_hi, k + 8 * t, k_end, hi_ok));
#pragma unroll
  for (int j = 0; j < kTokenGroups; ++j) finish_tile(p, n0, j * 8, split, num_splits, acc[j], lane);
}

// This block's share of p.maybe_l2_prefetch, by thread 0 in one bulk prefetch: the region's 16-byte units split
// evenly over the grid's blocks. Weights only (the weights-first rule), so it may run before pdl_begin.
__device__ __forceinline__ void l2_prefetch_share(const MatmulParams& p) {
  if (!p.maybe_l2_prefetch || threadIdx.x != 0) return;
  const int64_t blocks = int64_t(gridDim.x) * gridDim.y, b = blockIdx.x + int64_t(gridDim.x) * blockIdx.y;
  const int64_t units = p.l2_prefetch_bytes / 16, per = (units + blocks - 1) / blocks;
  const int64_t begin = min(units, b * per), end = min(units, begin + per);
  if (end > begin)
    prefetch_l2(static_cast<const uint8_t*>(p.maybe_l2_prefetch) + begin * 16, uint32_t((end - begin) * 16));
}

template <int kTokenGroups, bool kVec>
__global__ void __launch_bounds__(kDecodeWarps * 32) matmul_decode(const MatmulParams p, int split_len, int num_splits) {
  pdl_weights_first();
  l2_prefetch_share(p);
  static_assert(kDecodeWeightsFirstRows == 16, "the weights-first form is the 1- and 2-group instances");
  if constexpr (kTokenGroups <= 2) {
    decode_warp<kTokenGroups, kVec, true>(p, split_len, num_splits);  // calls pdl_begin() itself
  } else {
    pdl_begin();
    decode_warp<kTokenGroups, kVec, false>(p, split_len, num_splits);
  }
}

// ---- Mid: 16 < M <= 128 (FLINT_MATMUL=mid; any M up to 128 when asked for by name). The decode kernel's warps, 16
// weight rows each with the weights straight from global memory into mma fragments, a 4-step chunk in flight while
// the one before it computes, and the tokens staged in shared memory: the block's kMidWarps warps copy each
// 128-value chunk of x (every token) once, by cp.async, double-buffered, and read their fragments from there. The
// decode kernel has each warp load x itself, which at M = 32 is twice its weights' bytes per warp and at M = 64 four
// times. Per output the same 32-value steps in the same order, zeros where the decode kernel has zeros, the same
// epilogue: the same bits.
constexpr int kMidWarps = 8, kMidChunk = 32 * kUnroll;  // 128 k values a chunk
// A token's chunk in shared memory: 256 bytes, padded to 320 so that the 8 lanes of a 16-byte load phase (two
// tokens × 4 k offsets) fall in 8 different 16-byte bank groups.
constexpr int kMidRowBytes = kMidChunk * 2 + 64;

template <int kTokenGroups>
constexpr size_t mid_smem_bytes() { return size_t(2) * kTokenGroups * 8 * kMidRowBytes; }

template <int kTokenGroups>
__global__ void __launch_bounds__(kMidWarps * 32) matmul_mid(const MatmulParams p, int split_len, int num_splits) {
  pdl_weights_first();
  l2_prefetch_share(p);
  extern __shared__ __align__(16) uint8_t mid_smem[];
  constexpr int kRows = kTokenGroups * 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int n0 = (blockIdx.x * kMidWarps + warp) * 16;
  const bool active = n0 < p.N;  // a warp past N still copies x and meets the barriers
  const int split = blockIdx.y;
  const int k_begin = split * split_len, k_end = min(p.K, k_begin + split_len);
  const int n_chunks = k_end > k_begin ? (k_end - k_begin + kMidChunk - 1) / kMidChunk : 0;
  const bool lo_ok = active && n0 + g < p.N, hi_ok = active && n0 + g + 8 < p.N;
  const bf16_bits* w_lo = p.w + int64_t(lo_ok ? n0 + g : 0) * p.ldw;
  const bf16_bits* w_hi = p.w + int64_t(hi_ok ? n0 + g + 8 : 0) * p.ldw;
  uint4 lo[kUnroll], hi[kUnroll];
  auto load_w = [&](uint4 (&l)[kUnroll], uint4 (&h)[kUnroll], int at) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      l[u] = load8<true>(w_lo, at + 32 * u + 8 * t, k_end, lo_ok);
      h[u] = load8<true>(w_hi, at + 32 * u + 8 * t, k_end, hi_ok);
    }
  };
  // Chunk c of x into buffer c % 2: token r's values from k = k_begin + c · kMidChunk on, in 16-byte pieces; zeros
  // past k_end and for tokens r >= M (as the decode kernel's loads give).
  auto load_x = [&](int c) {
    const int k = k_begin + c * kMidChunk;
    uint8_t* buf = mid_smem + (c & 1) * kRows * kMidRowBytes;
    for (int i = threadIdx.x; i < kRows * (kMidChunk / 8); i += kMidWarps * 32) {
      const int r = i / (kMidChunk / 8), q = i % (kMidChunk / 8), kk = k + 8 * q;
      const bool fill = r < p.M && kk < k_end;
      cp_async16(buf + r * kMidRowBytes + q * 16, p.x + (fill ? int64_t(r) * p.ldx + kk : 0), fill);
    }
    cp_async_commit();
  };
  if (n_chunks > 0) load_w(lo, hi, k_begin);  // weights only before pdl_begin: nothing writes them in a step
  pdl_begin();
  float acc[kTokenGroups][4] = {};
  if (n_chunks > 0) load_x(0);
  for (int c = 0; c < n_chunks; ++c) {
    const int k = k_begin + c * kMidChunk;
    const bool more = c + 1 < n_chunks;
    uint4 next_lo[kUnroll], next_hi[kUnroll];
    if (more) {
      load_x(c + 1);
      load_w(next_lo, next_hi, k + kMidChunk);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // chunk c's x has landed, every thread's copies
    if (active) {
      const uint8_t* buf = mid_smem + (c & 1) * kRows * kMidRowBytes;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (k + 32 * u >= k_end) break;  // a split's last chunk may hold fewer steps: the decode kernel runs no more
#pragma unroll
        for (int j = 0; j < kTokenGroups; ++j) {
          const uint4 xv = *reinterpret_cast<const uint4*>(buf + (j * 8 + g) * kMidRowBytes + (32 * u + 8 * t) * 2);
          mma_step32(acc[j], lo[u], hi[u], xv);
        }
      }
    }
    __syncthreads();  // buffer c % 2 is refilled by chunk c + 2's copy, queued next round
    if (more) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) lo[u] = next_lo[u], hi[u] = next_hi[u];
    }
  }
  if (!active) return;
#pragma unroll
  for (int j = 0; j < kTokenGroups; ++j) finish_tile(p, n0, j * 8, split, num_splits, acc[j], lane);
}

// The one table of decode instances: token groups of 8 rounded up to 1, 2, 4 or 8, times the load path.
template <bool kVec>
cudaError_t launch_decode_vec(const MatmulParams& p, int split_len, int num_splits, cudaStream_t stream) {
  const dim3 grid((p.N + 16 * kDecodeWarps - 1) / (16 * kDecodeWarps), num_splits), block(kDecodeWarps * 32);
  const int groups = (p.M + 7) / 8;
  if (groups <= 1) return launch_kernel(matmul_decode<1, kVec>, grid, block, 0, stream, p, split_len, num_splits);
  if (groups <= 2) return launch_kernel(matmul_decode<2, kVec>, grid, block, 0, stream, p, split_len, num_splits);
  if (groups <= 4) return launch_kernel(matmul_decode<4, kVec>, grid, block, 0, stream, p, split_len, num_splits);
  return launch_kernel(matmul_decode<8, kVec>, grid, block, 0, stream, p, split_len, num_splits);
}


template <int kTokenGroups>
cudaError_t launch_mid_groups(const MatmulParams& p, int split_len, int num_splits, cudaStream_t stream) {
  static const cudaError_t attr = cudaFuncSetAttribute(matmul_mid<kTokenGroups>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                       int(mid_smem_bytes<kTokenGroups>()));
  if (attr != cudaSuccess) return attr;
  const dim3 grid((p.N + 16 * kMidWarps - 1) / (16 * kMidWarps), num_splits);
  return launch_kernel(matmul_mid<kTokenGroups>, grid, dim3(kMidWarps * 32), mid_smem_bytes<kTokenGroups>(), stream,
                       p, split_len, num_splits);
}

}  // namespace

cudaError_t launch_mid(const MatmulParams& p, int split_len, int num_splits, cudaStream_t stream) {
  const int groups = (p.M + 7) / 8;
  if (groups <= 2) return launch_mid_groups<2>(p, split_len, num_splits, stream);
  if (groups <= 4) return launch_mid_groups<4>(p, split_len, num_splits, stream);
  if (groups <= 8) return launch_mid_groups<8>(p, split_len, num_splits, stream);
  if (groups <= 12) return launch_mid_groups<12>(p, split_len, num_splits, stream);
  return launch_mid_groups<16>(p, split_len, num_splits, stream);
}

cudaError_t launch_decode(const MatmulParams& p, bool vec, int split_len, int num_splits, cudaStream_t stream) {
  return vec ? launch_decode_vec<true>(p, split_len, num_splits, stream)
             : launch_decode_vec<false>(p, split_len, num_splits, stream);
}

}  // namespace flint::cuda::mm
