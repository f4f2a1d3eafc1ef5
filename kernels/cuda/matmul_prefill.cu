// The prefill matmul kernels (any M; the dispatcher picks them above 64 rows): 128 weight rows × 128 tokens a block
// through shared memory, on mma.sync (matmul_prefill) and on Hopper's wgmma (matmul_prefill_wgmma); their launchers.
// See matmul.h for the design and matmul_common.cuh for the arithmetic every kernel shares.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/matmul_common.cuh"
#include "kernels/cuda/matmul_kernels.h"

namespace flint::cuda::mm {

namespace {

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

template <int kWarpgroups>
cudaError_t launch_prefill_wgmma_shape(const MatmulParams& p, int split_len, int num_splits, cudaStream_t stream,
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
cudaError_t launch_prefill_vec(const MatmulParams& p, int split_len, int num_splits, cudaStream_t stream, bool* folded) {
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

}  // namespace

cudaError_t launch_prefill(const MatmulParams& p, bool vec, int split_len, int num_splits, cudaStream_t stream,
                           bool* folded) {
  return vec ? launch_prefill_vec<true>(p, split_len, num_splits, stream, folded)
             : launch_prefill_vec<false>(p, split_len, num_splits, stream, folded);
}

cudaError_t launch_prefill_wgmma(const MatmulParams& p, int warpgroups, int split_len, int num_splits,
                                 cudaStream_t stream, bool* folded) {
  return warpgroups == 1 ? launch_prefill_wgmma_shape<1>(p, split_len, num_splits, stream, folded)
                         : launch_prefill_wgmma_shape<2>(p, split_len, num_splits, stream, folded);
}

}  // namespace flint::cuda::mm
