// The bf16 matmul kernels (decode, prefill), the split-K reduction and epilogue, the cuBLASLt path and the
// dispatcher. See matmul.h for the design and kernels/matmul_params.h for the reduction order all of them share.
#include "kernels/cuda/matmul.h"

#include <cublasLt.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.cuh"

namespace flint::cuda {

namespace {

using bf16 = __nv_bfloat16;

// ---- The arithmetic every kernel shares.

// One 32-value k step of a 16 (weight rows) × 8 (tokens) tile. Lane (g = lane / 4, t = lane % 4) holds values
// 8t .. 8t+7 of the step for weight row g (w_lo), weight row g + 8 (w_hi) and token g (xv): the first mma gets
// values 8t .. 8t+3 of each, the second 8t+4 .. 8t+7. The mma's k slots (2t, 2t+1, 2t+8, 2t+9) thus hold the
// same k values for a and b, so the sum is the matmul's; every kernel uses exactly this mapping and this order,
// which is what makes a row's bits independent of the kernel and of M.
__device__ __forceinline__ void mma_step32(float (&acc)[4], const uint4& w_lo, const uint4& w_hi, const uint4& xv) {
  mma_m16n8k16(acc, w_lo.x, w_hi.x, w_lo.y, w_hi.y, xv.x, xv.y);
  mma_m16n8k16(acc, w_lo.z, w_hi.z, w_lo.w, w_hi.w, xv.z, xv.w);
}

// Values k .. k+7 of a row (zeros past k_end or for a row that does not exist). kVec: one 16-byte load (k, the
// row and k_end are multiples of 8 then); else element by element.
template <bool kVec>
__device__ __forceinline__ uint4 load8(const bf16_bits* row, int k, int k_end, bool row_ok) {
  uint4 v = make_uint4(0, 0, 0, 0);
  if (!row_ok) return v;
  if constexpr (kVec) {
    if (k < k_end) v = __ldg(reinterpret_cast<const uint4*>(row + k));
  } else {
    uint16_t e[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) e[i] = k + i < k_end ? __ldg(row + k + i) : uint16_t(0);
    v.x = e[0] | uint32_t(e[1]) << 16;
    v.y = e[2] | uint32_t(e[3]) << 16;
    v.z = e[4] | uint32_t(e[5]) << 16;
    v.w = e[6] | uint32_t(e[7]) << 16;
  }
  return v;
}

__device__ __forceinline__ void store_value(void* base, int64_t ld, int m, int col, MatmulOut type, float v) {
  if (type == MatmulOut::F32) static_cast<float*>(base)[m * ld + col] = v;
  else static_cast<bf16*>(base)[m * ld + col] = __float2bfloat16_rn(v);
}

__device__ __forceinline__ float add_bias(const MatmulParams& p, int n, float acc) {
  return p.maybe_bias ? acc + __bfloat162float(reinterpret_cast<const bf16*>(p.maybe_bias)[n]) : acc;
}

// Epilogue None / Qkv: the finished sum of output column n (weight row n) of token m.
__device__ __forceinline__ void store_column(const MatmulParams& p, int m, int n, float acc) {
  const float v = add_bias(p, n, acc);
  if (p.epilogue == MatmulEpilogue::Qkv) {
    if (n < p.num_q) store_value(p.y, p.ldy, m, n, p.out_type, v);
    else if (n < p.num_q + p.num_kv) store_value(p.k_out, p.ld_k, m, n - p.num_q, p.out_type, v);
    else store_value(p.v_out, p.ld_v, m, n - p.num_q - p.num_kv, p.out_type, v);
  } else {
    store_value(p.y, p.ldy, m, n, p.out_type, v);
  }
}

// Epilogue SiluMul: output f of token m from the finished sums of its gate and up rows.
__device__ __forceinline__ void store_silu_mul(const MatmulParams& p, int m, int f, float gate_acc, float up_acc) {
  const float gate = add_bias(p, gate_up_row(f, false), gate_acc), up = add_bias(p, gate_up_row(f, true), up_acc);
  store_value(p.y, p.ldy, m, f, p.out_type, gate / (1.0f + expf(-gate)) * up);
}

// A 16 × 8 tile's accumulators (rows n0 .. n0+15, tokens m0 .. m0+7; n0 a multiple of 16) to where they go:
// split `split`'s partial sums when K is split (num_splits > 1), else through the epilogue.
__device__ __forceinline__ void finish_tile(const MatmulParams& p, int n0, int m0, int split, int num_splits,
                                            const float (&c)[4], int lane) {
  const int g = lane / 4, t = lane % 4;
  const int n_lo = n0 + g, n_hi = n0 + g + 8, m_a = m0 + 2 * t, m_b = m_a + 1;
  if (num_splits > 1) {
    float* ws = static_cast<float*>(p.workspace) + size_t(split) * p.M * p.N;
    if (m_a < p.M) {
      if (n_lo < p.N) ws[size_t(m_a) * p.N + n_lo] = c[0];
      if (n_hi < p.N) ws[size_t(m_a) * p.N + n_hi] = c[2];
    }
    if (m_b < p.M) {
      if (n_lo < p.N) ws[size_t(m_b) * p.N + n_lo] = c[1];
      if (n_hi < p.N) ws[size_t(m_b) * p.N + n_hi] = c[3];
    }
    return;
  }
  if (p.epilogue == MatmulEpilogue::SiluMul) {  // N % 16 == 0: rows n_lo (gate of f) and n_hi (its up) both exist
    const int f = n0 / 2 + g;
    if (n_lo >= p.N) return;
    if (m_a < p.M) store_silu_mul(p, m_a, f, c[0], c[2]);
    if (m_b < p.M) store_silu_mul(p, m_b, f, c[1], c[3]);
    return;
  }
  if (m_a < p.M) {
    if (n_lo < p.N) store_column(p, m_a, n_lo, c[0]);
    if (n_hi < p.N) store_column(p, m_a, n_hi, c[2]);
  }
  if (m_b < p.M) {
    if (n_lo < p.N) store_column(p, m_b, n_lo, c[1]);
    if (n_hi < p.N) store_column(p, m_b, n_hi, c[3]);
  }
}

// Sums the splits' partials in split order (0, then += 1, 2, ...) and runs the epilogue; one thread per output.
// Also the epilogue of the cuBLASLt path (one "split": its fp32 result).
__global__ void reduce_splits(const MatmulParams p, int num_splits) {
  pdl_begin();
  const int cols = p.epilogue == MatmulEpilogue::SiluMul ? p.N / 2 : p.N;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(p.M) * cols) return;
  const int m = int(i / cols), col = int(i % cols);
  const float* ws = static_cast<const float*>(p.workspace);
  const size_t split_stride = size_t(p.M) * p.N;
  auto sum = [&](int n) {
    float s = ws[size_t(m) * p.N + n];
    for (int z = 1; z < num_splits; ++z) s = s + ws[z * split_stride + size_t(m) * p.N + n];
    return s;
  };
  if (p.epilogue == MatmulEpilogue::SiluMul) store_silu_mul(p, m, col, sum(gate_up_row(col, false)), sum(gate_up_row(col, true)));
  else store_column(p, m, col, sum(col));
}

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

// ---- Prefill: any M. Block = 8 warps on 128 weight rows × 128 tokens; warp (wn = warp % 4, wm = warp / 4) owns
// rows 32·wn .. +31 (two 16-row groups) and tokens 64·wm .. +63 (eight groups of 8). Each 32-value k step is
// copied to shared memory by cp.async (16 bytes per copy, zero-filled past the matrix) kPrefillStages - 1 steps
// ahead. A tile row is 64 bytes, so the 8 lanes of one 16-byte shared load phase (rows r, r+1, four 16-byte parts
// each) read 128 contiguous bytes: no bank conflicts, no swizzle needed.
constexpr int kPrefillRows = 128, kPrefillTokens = 128, kPrefillStages = 4, kPrefillThreads = 256;
constexpr int kChunksPerStage = (kPrefillRows + kPrefillTokens) * 4;  // 16-byte chunks: 4 per 32-value row
constexpr size_t kPrefillSmemBytes = size_t(kPrefillStages) * kChunksPerStage * 16;

// kFold: the block runs every split of K itself and adds each split's sums into `total` when the split ends
// (total = split 0, then total + split 1, ...: the very fp32 additions reduce_splits makes, in the same order), so
// no partials go through memory. Used when the M × N tiles alone fill the card; else blockIdx.z is the split and
// the partials go to the workspace for reduce_splits. Both give the same bits.
template <bool kVec, bool kFold>
__global__ void __launch_bounds__(kPrefillThreads) matmul_prefill(const MatmulParams p, int split_len, int num_splits) {
  pdl_begin();
  extern __shared__ uint4 smem[];  // [stage][128 weight rows × 4 chunks, then 128 token rows × 4 chunks]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int wn = warp % 4, wm = warp / 4;
  const int n_block = blockIdx.x * kPrefillRows, m_block = blockIdx.y * kPrefillTokens;
  const int split = kFold ? 0 : int(blockIdx.z);
  const int k_begin = kFold ? 0 : split * split_len, k_end = kFold ? p.K : min(p.K, k_begin + split_len);
  const int steps = (k_end - k_begin + 31) / 32, steps_per_split = split_len / 32;

  auto load_stage = [&](int slot, int step) {
    uint4* dst = smem + slot * kChunksPerStage;
    const int k_step = k_begin + step * 32;
#pragma unroll
    for (int j = 0; j < kChunksPerStage / kPrefillThreads; ++j) {
      const int c = tid + j * kPrefillThreads;
      const bool is_x = c >= kPrefillRows * 4;  // the first half of j are weight chunks, the second token chunks
      const int row = (is_x ? c - kPrefillRows * 4 : c) / 4, k = k_step + (c % 4) * 8;
      const int r = (is_x ? m_block : n_block) + row;
      const bool ok = r < (is_x ? p.M : p.N);
      const bf16_bits* src_row = is_x ? p.x + int64_t(ok ? r : 0) * p.ldx : p.w + int64_t(ok ? r : 0) * p.ldw;
      if constexpr (kVec) {
        const bool fill = ok && k < k_end;
        cp_async16(dst + c, src_row + (fill ? k : 0), fill);
      } else {
        dst[c] = load8<false>(src_row, k, k_end, ok);
      }
    }
  };

  float acc[2][8][4] = {};
  float total[kFold ? 2 : 1][8][4];
  int split_steps = 0, splits_done = 0;  // kFold: steps of the current split run so far, splits folded
  auto fold = [&] {
#pragma unroll
    for (int i = 0; i < (kFold ? 2 : 0); ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          total[i][j][r] = splits_done == 0 ? acc[i][j][r] : total[i][j][r] + acc[i][j][r];
          acc[i][j][r] = 0.0f;
        }
    ++splits_done;
    split_steps = 0;
  };
#pragma unroll
  for (int s = 0; s < kPrefillStages - 1; ++s) {
    if (s < steps) load_stage(s, s);
    cp_async_commit();
  }
  for (int step = 0; step < steps; ++step) {
    cp_async_wait<kPrefillStages - 2>();
    __syncthreads();  // step's copies landed for every thread, and every warp is done with step - 1's slot
    const int next = step + kPrefillStages - 1;
    if (next < steps) load_stage(next % kPrefillStages, next);
    cp_async_commit();
    if (kFold && split_steps == steps_per_split) fold();
    const uint4* st = smem + (step % kPrefillStages) * kChunksPerStage;
    uint4 lo[2], hi[2], xv[8];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = wn * 32 + i * 16 + g;
      lo[i] = st[row * 4 + t];
      hi[i] = st[(row + 8) * 4 + t];
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) xv[j] = st[kPrefillRows * 4 + (wm * 64 + j * 8 + g) * 4 + t];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) mma_step32(acc[i][j], lo[i], hi[i], xv[j]);
    ++split_steps;
  }
  cp_async_wait<0>();
  if constexpr (kFold) {
    fold();  // the last split
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j)
        finish_tile(p, n_block + wn * 32 + i * 16, m_block + wm * 64 + j * 8, 0, 1, total[i][j], lane);
  } else {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j)
        finish_tile(p, n_block + wn * 32 + i * 16, m_block + wm * 64 + j * 8, split, num_splits, acc[i][j], lane);
  }
}

// ---- Prefill on Hopper (sm_90a): matmul_prefill's tiles and arithmetic with the tensor-core steps as wgmma.
// Block = 2 warpgroups on 128 weight rows × 128 tokens; warpgroup wg owns weight rows 64·wg .. +63 of the tile and
// all 128 tokens, its warp wq (of 4) rows 16·wq .. +15 of those. K goes through shared memory 64 values (two
// 32-value steps) a stage, kWgAhead stages ahead, by cp.async:
//   weights: 128 rows × 128 bytes, 16-byte copies; chunk c of row r sits at chunk c ^ 4·(r % 2), so the 8 lanes of
//            a 16-byte load phase (rows r and r + 1, four chunks each) cover the 32 banks. A warp loads its A
//            fragments from there as the decode kernel loads them from global memory: per 32 values, 16 bytes
//            (values 8t .. 8t+7) of row g and of row g + 8.
//   tokens:  128 rows × 128 bytes, 4-byte copies (one k pair each), placed where the wgmma's B slots want them:
//            slots 2t, 2t+1, 2t+8, 2t+9 of a 32-value step's first k16 step hold its values 8t .. 8t+3, those of
//            the second 8t+4 .. 8t+7 (mma_step32's mapping), then the 128-byte swizzle (wgmma_desc_sw128).
// So each k16 step adds the same products, in the same slots, onto the same accumulator as an m16n8k16 step of
// the other kernels, and a 32-value step's two wgmmas follow each other as mma_step32's two mmas do: a row's bits
// are those of the decode and mma.sync prefill kernels, as long as the tensor core computes a wgmma k16 step as it
// computes an mma.sync one: on the H200 it does (docs/perf.md, run 9; the GPU tests check every row bit for bit).
// A warpgroup leaves its last wgmma group of a stage running into the next stage (wgmma_wait<1>), so the two
// warpgroups, which meet at every stage's __syncthreads, do not both drain the tensor cores there; the slot a
// stage refills is therefore the one read two stages before, and kWgStages = kWgAhead + 2.
// WgShape<1> (FLINT_MATMUL=wgmma64): the same kernel with one warpgroup on 64 weight rows, two stages ahead, so two
// blocks fit an SM: twice the blocks of half the work, for grids a little over a wave (140 blocks of 128 rows on
// 132 SMs take two rounds). Each row's k steps are the same, so are its bits.
template <int kWarpgroups>
struct WgShape {
  static constexpr int kThreads = 128 * kWarpgroups, kRows = 64 * kWarpgroups;
  static constexpr int kAhead = kWarpgroups == 2 ? 3 : 2, kStages = kAhead + 2;
  static constexpr int kWeightBytes = kRows * 128, kTokenBytes = 128 * 128, kStageBytes = kWeightBytes + kTokenBytes;
  static constexpr size_t kSmemBytes = size_t(kStages) * kStageBytes + 1024;  // + room to align to 1024 bytes
  static constexpr int kBlocksPerSm = 3 - kWarpgroups;
};

template <bool kFold, int kWarpgroups>
__global__ void __launch_bounds__(WgShape<kWarpgroups>::kThreads, WgShape<kWarpgroups>::kBlocksPerSm)
    matmul_prefill_wgmma(const MatmulParams p, int split_len, int num_splits) {
  pdl_begin();
  using W = WgShape<kWarpgroups>;
  constexpr int kWgAhead = W::kAhead, kWgStages = W::kStages, kWgThreads = W::kThreads;
  extern __shared__ uint8_t wg_smem_raw[];  // [stage][weights tile, then tokens tile], 1024-byte aligned
  unsigned char* const smem = wg_smem_raw + (1024 - shared_address(wg_smem_raw) % 1024) % 1024;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int wg = warp / 4, wq = warp % 4;
  const int n_block = blockIdx.x * W::kRows, m_block = blockIdx.y * 128;
  const int split = kFold ? 0 : int(blockIdx.z);
  const int k_begin = kFold ? 0 : split * split_len, k_end = kFold ? p.K : min(p.K, k_begin + split_len);
  const int steps = (k_end - k_begin + 31) / 32, stages = (steps + 1) / 2, steps_per_split = split_len / 32;
  auto weights_tile = [&](int slot) { return smem + slot * W::kStageBytes; };
  auto tokens_tile = [&](int slot) { return smem + slot * W::kStageBytes + W::kWeightBytes; };

  auto load_stage = [&](int slot, int stage) {
    const int k0 = k_begin + stage * 64;
    unsigned char* const w_dst = weights_tile(slot);
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // 8 chunks per row; 8 consecutive threads copy one row's 128 bytes
      const int c = tid + j * kWgThreads, row = c / 8, chunk = c % 8;
      const int n = n_block + row, k = k0 + chunk * 8;
      const bool fill = n < p.N && k < k_end;
      cp_async16(w_dst + row * 128 + (chunk ^ ((row & 1) << 2)) * 16,
                 p.w + int64_t(n < p.N ? n : 0) * p.ldw + (fill ? k : 0), fill);
    }
    unsigned char* const x_dst = tokens_tile(slot);
    // Pair `lane` of the stage's 32 (values 2·lane, +1): step s = lane / 16, and within the step pair q = 4u + 2h + e
    // (values 8u + 4h + 2e, +1) goes to k16 step h, slots 2(u + 4e), +1.
    const int s = lane / 16, q = lane % 16, u = q / 4, h = (q / 2) % 2, e = q % 2;
    const int byte = 32 * (2 * s + h) + 4 * (u + 4 * e);  // in the token's 128-byte row, before the swizzle
#pragma unroll 4
    for (int j = 0; j < 32 / kWarpgroups; ++j) {  // a warp copies one token's 64 values (128 contiguous bytes) a round
      const int row = warp * (32 / kWarpgroups) + j, m = m_block + row, k = k0 + 2 * lane;
      const bool fill = m < p.M && k < k_end;
      cp_async4(x_dst + row * 128 + ((byte / 16) ^ (row & 7)) * 16 + byte % 16,
                p.x + int64_t(m < p.M ? m : 0) * p.ldx + (fill ? k : 0), fill);
    }
  };

  float acc[64];
  float total[kFold ? 64 : 1];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  int split_steps = 0, splits_done = 0;  // kFold: steps of the current split run so far, splits folded
  auto fold = [&] {                      // the accumulators are settled (wgmma_wait<0>) when this runs
#pragma unroll
    for (int i = 0; i < (kFold ? 64 : 0); ++i) {
      total[i] = splits_done == 0 ? acc[i] : total[i] + acc[i];
      acc[i] = 0.0f;
    }
    ++splits_done;
    split_steps = 0;
  };
#pragma unroll
  for (int st = 0; st < kWgAhead; ++st) {
    if (st < stages) load_stage(st, st);
    cp_async_commit();
  }
  const int row_lo = wg * 64 + wq * 16 + g;  // this lane's weight rows in the tile: row_lo and row_lo + 8
  for (int st = 0; st < stages; ++st) {
    cp_async_wait<kWgAhead - 1>();
    fence_proxy_async();  // this thread's copies of stage st, seen by the wgmmas' (async proxy) reads
    __syncthreads();      // stage st landed for every thread; every wgmma on stage st - 2's slot has finished
    const int next = st + kWgAhead;
    if (next < stages) load_stage(next % kWgStages, next);
    cp_async_commit();
    const unsigned char* const w_tile = weights_tile(st % kWgStages);
    const unsigned char* const x_tile = tokens_tile(st % kWgStages);
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      if (2 * st + s >= steps) break;
      if (kFold && split_steps == steps_per_split) {
        wgmma_wait<0>();
        wgmma_fence_operand(acc);
        fold();
      }
      const int chunk = 4 * s + t;
      const uint4 lo = *reinterpret_cast<const uint4*>(w_tile + row_lo * 128 + (chunk ^ ((row_lo & 1) << 2)) * 16);
      const uint4 hi =
          *reinterpret_cast<const uint4*>(w_tile + (row_lo + 8) * 128 + (chunk ^ (((row_lo + 8) & 1) << 2)) * 16);
      wgmma_fence();
      wgmma_m64n128k16(acc, lo.x, hi.x, lo.y, hi.y, wgmma_desc_sw128(x_tile, 64 * s));
      wgmma_m64n128k16(acc, lo.z, hi.z, lo.w, hi.w, wgmma_desc_sw128(x_tile, 64 * s + 32));
      wgmma_commit();
      ++split_steps;
    }
    wgmma_wait<1>();  // stage st - 1's wgmmas done before the next __syncthreads lets its slot be refilled
  }
  wgmma_wait<0>();
  wgmma_fence_operand(acc);
  cp_async_wait<0>();
  const int n0 = n_block + wg * 64 + wq * 16;
  auto finish = [&](const float (&v)[64], int sp, int nsp) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const float c[4] = {v[4 * j], v[4 * j + 1], v[4 * j + 2], v[4 * j + 3]};
      finish_tile(p, n0, m_block + 8 * j, sp, nsp, c, lane);
    }
  };
  if constexpr (kFold) {
    fold();  // the last split
    finish(total, 0, 1);
  } else {
    finish(acc, split, num_splits);
  }
}

// ---- Host side.

bool vector_loads_ok(const MatmulParams& p) {
  auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  return aligned(p.x) && aligned(p.w) && p.K % 8 == 0 && p.ldx % 8 == 0 && p.ldw % 8 == 0;
}

// The one table of decode instances: token groups of 8 rounded up to 1, 2, 4 or 8, times the load path.
template <bool kVec>
cudaError_t launch_decode(const MatmulParams& p, int split_len, int num_splits, cudaStream_t stream) {
  const dim3 grid((p.N + 16 * kDecodeWarps - 1) / (16 * kDecodeWarps), num_splits), block(kDecodeWarps * 32);
  const int groups = (p.M + 7) / 8;
  if (groups <= 1) return launch_kernel(matmul_decode<1, kVec>, grid, block, 0, stream, p, split_len, num_splits);
  if (groups <= 2) return launch_kernel(matmul_decode<2, kVec>, grid, block, 0, stream, p, split_len, num_splits);
  if (groups <= 4) return launch_kernel(matmul_decode<4, kVec>, grid, block, 0, stream, p, split_len, num_splits);
  return launch_kernel(matmul_decode<8, kVec>, grid, block, 0, stream, p, split_len, num_splits);
}

// The mid kernel's instances: token groups of 8 rounded up to 2, 4, 8, 12 or 16 (16-byte loads only).
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

cudaError_t launch_mid(const MatmulParams& p, int split_len, int num_splits, cudaStream_t stream) {
  const int groups = (p.M + 7) / 8;
  if (groups <= 2) return launch_mid_groups<2>(p, split_len, num_splits, stream);
  if (groups <= 4) return launch_mid_groups<4>(p, split_len, num_splits, stream);
  if (groups <= 8) return launch_mid_groups<8>(p, split_len, num_splits, stream);
  if (groups <= 12) return launch_mid_groups<12>(p, split_len, num_splits, stream);
  return launch_mid_groups<16>(p, split_len, num_splits, stream);
}

int multiprocessor_count() {  // of the device current at the first call
  static const int sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      return 132;
    return n;
  }();
  return sms;
}

bool compute_capability_9() {  // of the device current at the first call: Hopper, where the wgmma kernel runs
  static const bool hopper = [] {
    int dev = 0, major = 0;
    return cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major == 9;
  }();
  return hopper;
}

// The wgmma prefill kernel (16-byte loads only: vector_loads_ok). Returns whether the splits were folded inside it.
template <int kWarpgroups>
cudaError_t launch_prefill_wgmma(const MatmulParams& p, int split_len, int num_splits, cudaStream_t stream,
                                 bool* folded) {
  using W = WgShape<kWarpgroups>;
  const int tiles = ((p.N + W::kRows - 1) / W::kRows) * ((p.M + 127) / 128);
  *folded = num_splits > 1 && tiles >= multiprocessor_count() * W::kBlocksPerSm;
  static const cudaError_t attr_split = cudaFuncSetAttribute(
      matmul_prefill_wgmma<false, kWarpgroups>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(W::kSmemBytes));
  static const cudaError_t attr_fold = cudaFuncSetAttribute(
      matmul_prefill_wgmma<true, kWarpgroups>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(W::kSmemBytes));
  if (attr_split != cudaSuccess) return attr_split;
  if (attr_fold != cudaSuccess) return attr_fold;
  const dim3 grid((p.N + W::kRows - 1) / W::kRows, (p.M + 127) / 128, *folded ? 1 : num_splits);
  return launch_kernel(*folded ? matmul_prefill_wgmma<true, kWarpgroups> : matmul_prefill_wgmma<false, kWarpgroups>,
                       grid, dim3(W::kThreads), W::kSmemBytes, stream, p, split_len, num_splits);
}

// Returns whether the splits were folded inside the kernel (then no reduction is left to run).
template <bool kVec>
cudaError_t launch_prefill(const MatmulParams& p, int split_len, int num_splits, cudaStream_t stream, bool* folded) {
  const int tiles = ((p.N + kPrefillRows - 1) / kPrefillRows) * ((p.M + kPrefillTokens - 1) / kPrefillTokens);
  *folded = num_splits > 1 && tiles >= multiprocessor_count();
  const auto kernel = *folded ? matmul_prefill<kVec, true> : matmul_prefill<kVec, false>;
  static const cudaError_t attr_split =
      cudaFuncSetAttribute(matmul_prefill<kVec, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kPrefillSmemBytes));
  static const cudaError_t attr_fold =
      cudaFuncSetAttribute(matmul_prefill<kVec, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kPrefillSmemBytes));
  if (attr_split != cudaSuccess) return attr_split;
  if (attr_fold != cudaSuccess) return attr_fold;
  const dim3 grid((p.N + kPrefillRows - 1) / kPrefillRows, (p.M + kPrefillTokens - 1) / kPrefillTokens,
                  *folded ? 1 : num_splits);
  return launch_kernel(kernel, grid, dim3(kPrefillThreads), kPrefillSmemBytes, stream, p, split_len, num_splits);
}

cudaError_t launch_reduce(const MatmulParams& p, int num_splits, cudaStream_t stream) {
  const int64_t outputs = int64_t(p.M) * (p.epilogue == MatmulEpilogue::SiluMul ? p.N / 2 : p.N);
  return launch_kernel(reduce_splits, dim3(unsigned((outputs + 255) / 256)), dim3(256), 0, stream, p, num_splits);
}

// cuBLASLt: one handle for the process, made on first use (cublasLtCreate is not free; the handle is not tied to a
// stream). fp32 out into the workspace, then reduce_splits with one "split" runs the epilogue.
cudaError_t launch_cublas(const MatmulParams& p, cudaStream_t stream, std::string* error) {
  static std::once_flag once;
  static cublasLtHandle_t handle = nullptr;
  static cublasStatus_t create_status = CUBLAS_STATUS_SUCCESS;
  std::call_once(once, [] { create_status = cublasLtCreate(&handle); });
  auto fail = [&](const char* what, cublasStatus_t s) {
    if (error) *error = std::string("cuBLASLt ") + what + ": " + cublasLtGetStatusName(s);
    return cudaErrorUnknown;
  };
  if (create_status != CUBLAS_STATUS_SUCCESS) return fail("create", create_status);
  // Column-major view: yᵀ (N × M, fp32) = op_T(w viewed K × N, ld ldw) · (x viewed K × M, ld ldx).
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasStatus_t s = cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t));
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n));
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, p.K, p.N, p.ldw);
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, p.K, p.M, p.ldx);
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, p.N, p.M, p.N);
  if (s == CUBLAS_STATUS_SUCCESS) {
    const float alpha = 1.0f, beta = 0.0f;
    s = cublasLtMatmul(handle, desc, &alpha, p.w, a, p.x, b, &beta, p.workspace, c, p.workspace, c, nullptr, nullptr,
                       0, stream);
  }
  if (c) cublasLtMatrixLayoutDestroy(c);
  if (b) cublasLtMatrixLayoutDestroy(b);
  if (a) cublasLtMatrixLayoutDestroy(a);
  if (desc) cublasLtMatmulDescDestroy(desc);
  if (s != CUBLAS_STATUS_SUCCESS) return fail("matmul", s);
  return launch_reduce(p, 1, stream);
}

struct EnvChoice {
  bool valid = true, cublas = false, hybrid = false, mma = false, wgmma64 = false, mid = false;
  std::string value;
};
const EnvChoice& env_choice() {
  static const EnvChoice choice = [] {
    EnvChoice c;
    const char* v = std::getenv("FLINT_MATMUL");
    c.value = v ? v : "";
    if (c.value == "cublas") c.cublas = true;
    else if (c.value == "hybrid") c.hybrid = true;
    else if (c.value == "mma") c.mma = true;
    else if (c.value == "wgmma64") c.wgmma64 = true;
    else if (c.value == "mid") c.mid = true;
    else if (!c.value.empty() && c.value != "flint") c.valid = false;
    return c;
  }();
  return choice;
}

}  // namespace

const char* matmul_kernel_name(MatmulKernel k) {
  switch (k) {
    case MatmulKernel::Auto: return "auto";
    case MatmulKernel::Decode: return "decode";
    case MatmulKernel::Prefill: return "prefill";
    case MatmulKernel::PrefillWgmma: return "prefill_wgmma";
    case MatmulKernel::Mid: return "mid";
    case MatmulKernel::Cublas: return "cublas";
  }
  return "?";
}

// FLINT_WGMMA_BUILT: CMake's word that sm_90a code was built (the emulator runs wgmma too); else the kernel is a
// trap on every device.
#if defined(FLINT_WGMMA_BUILT) || defined(FLINT_CUDA_EMU)
bool matmul_wgmma_available() { return compute_capability_9(); }
#else
bool matmul_wgmma_available() { return false; }
#endif

MatmulKernel matmul_pick(int M) {
  if (env_choice().cublas) return MatmulKernel::Cublas;
  if (env_choice().mid && M > 16 && M <= kMidMaxRows) return MatmulKernel::Mid;
  if (M <= kDecodeMaxRows) return MatmulKernel::Decode;
  if (env_choice().hybrid) return MatmulKernel::Cublas;
  return matmul_wgmma_available() && !env_choice().mma ? MatmulKernel::PrefillWgmma : MatmulKernel::Prefill;
}

size_t matmul_workspace_bytes(int M, int N, int K, MatmulKernel kernel) {
  const size_t ours = flint::matmul_workspace_bytes(M, N, K), cublas = size_t(M) * size_t(N) * sizeof(float);
  switch (kernel) {
    case MatmulKernel::Decode:
    case MatmulKernel::Mid:
    case MatmulKernel::Prefill:
    case MatmulKernel::PrefillWgmma: return ours;
    case MatmulKernel::Cublas: return cublas;
    case MatmulKernel::Auto: break;
  }
  // Auto runs what matmul_pick says, and only FLINT_MATMUL=cublas or hybrid (read once per process) picks cuBLAS:
  // the M × N fp32 buffer cuBLAS needs is not reserved otherwise (about 310 MB for Qwen2.5-7B's gate+up at 2048
  // tokens). Ours grows with M (the splits depend on the weight's shape only), so the largest M covers every
  // smaller one; hybrid runs ours only up to kDecodeMaxRows rows.
  if (env_choice().cublas) return cublas;
  if (env_choice().hybrid)
    return std::max(flint::matmul_workspace_bytes(std::min(M, kDecodeMaxRows), N, K), M > kDecodeMaxRows ? cublas : 0);
  return ours;
}

cudaError_t matmul(const MatmulParams& p, cudaStream_t stream, MatmulKernel kernel, std::string* error,
                   int* partials_left) {
  auto invalid = [&](std::string why) {
    if (error) *error = std::move(why);
    return cudaErrorInvalidValue;
  };
  if (partials_left) *partials_left = 0;
  if (p.leave_partials && !partials_left) return invalid("matmul: leave_partials needs partials_left (how many)");
  if (!env_choice().valid)
    return invalid("FLINT_MATMUL=" + env_choice().value +
                   ": expected 'flint' (the default), 'mma', 'wgmma64', 'mid', 'hybrid' or 'cublas'");
  if (kernel == MatmulKernel::Auto) kernel = matmul_pick(p.M);
  if (std::string e = matmul_params_error(p, kernel != MatmulKernel::Cublas); !e.empty()) return invalid(e);
  if (kernel == MatmulKernel::Cublas) {
    const size_t need = matmul_workspace_bytes(p.M, p.N, p.K, MatmulKernel::Cublas);
    if (!p.workspace || p.workspace_bytes < need)
      return invalid("matmul (cublas): workspace of " + std::to_string(need) + " bytes needed (fp32 M x N), got " +
                     std::to_string(p.workspace ? p.workspace_bytes : 0));
    return launch_cublas(p, stream, error);
  }
  if (kernel == MatmulKernel::PrefillWgmma && !matmul_wgmma_available())
    return invalid("matmul (prefill_wgmma): needs a device of compute capability 9.x (Hopper)");
  if (kernel == MatmulKernel::Decode && p.M > kDecodeMaxRows)
    return invalid("matmul (decode): M = " + std::to_string(p.M) + " rows, the decode kernel takes at most " +
                   std::to_string(kDecodeMaxRows));
  if (kernel == MatmulKernel::Mid && p.M > kMidMaxRows)
    return invalid("matmul (mid): M = " + std::to_string(p.M) + " rows, the mid kernel takes at most " +
                   std::to_string(kMidMaxRows));
  const int num_splits = matmul_num_splits(p.N, p.K), split_len = matmul_split_len(p.N, p.K);
  const bool vec = vector_loads_ok(p);
  cudaError_t e;
  bool folded = false;
  if (kernel == MatmulKernel::Mid && !vec)  // no 16-byte loads: the decode kernel (M <= 64) or Prefill, same bits
    kernel = p.M <= kDecodeMaxRows ? MatmulKernel::Decode : MatmulKernel::Prefill;
  if (kernel == MatmulKernel::Mid)
    e = launch_mid(p, split_len, num_splits, stream);
  else if (kernel == MatmulKernel::Decode)
    e = vec ? launch_decode<true>(p, split_len, num_splits, stream) : launch_decode<false>(p, split_len, num_splits, stream);
  else if (kernel == MatmulKernel::PrefillWgmma && vec)
    e = env_choice().wgmma64 ? launch_prefill_wgmma<1>(p, split_len, num_splits, stream, &folded)
                             : launch_prefill_wgmma<2>(p, split_len, num_splits, stream, &folded);
  else  // Prefill, or PrefillWgmma on a shape without 16-byte loads: the mma.sync kernel, the same bits
    e = vec ? launch_prefill<true>(p, split_len, num_splits, stream, &folded)
            : launch_prefill<false>(p, split_len, num_splits, stream, &folded);
  if (e != cudaSuccess || num_splits == 1 || folded) return e;
  if (p.leave_partials) {
    *partials_left = num_splits;
    return e;
  }
  return launch_reduce(p, num_splits, stream);
}

}  // namespace flint::cuda
