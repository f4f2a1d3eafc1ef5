// The decode attention kernels (one query token per sequence), their split merge and launcher: the SIMT kernel
// (the default) and the tensor-core one (FLINT_ATTN_DECODE=mma). Both cut a sequence's keys into the same splits
// (attention_keys_per_split) and leave the same partials, so a sequence's output depends only on its own keys. See
// attention.h for the design and kernels/attention_params.h for the layout and the batch contract.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <mutex>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.cuh"

namespace flint::cuda {

namespace {

using namespace attn;

// Eight bf16 values (one 16-byte load) as floats.
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
  }
}

// Number of keys query token t of sequence s sees: [0, position] clamped to the cache (StepPlan::validate keeps
// positions inside it; the clamp keeps a bad plan's reads inside the sequence's blocks).
__device__ __forceinline__ int visible_keys(const AttentionBatch& b, int s, int t) {
  return min(b.positions[t] + 1, b.kv_lens[s]);
}

// ---- The SIMT decode kernel (the default): a block (4 warps) per (sequence, KV head, head chunk, split). Lanes split head_dim into 16-byte
// vectors (kLanesPerKey lanes per key), so a warp load step covers kKeysPerStep keys; each warp takes kSteps load
// steps of K and of V in flight at once, scores them for all kHeads query heads, and keeps its own online softmax
// (max, sum, output) per head; the four warps merge through shared memory at the end, in warp order.
constexpr int kDecodeWarps = 4;

template <int kHeadDim, int kHeads>
struct DecodeShape {
  static constexpr int kLanesPerKey = kHeadDim / 8;
  static constexpr int kKeysPerStep = 32 / kLanesPerKey;
  static constexpr int kSteps = kHeads <= 4 ? 4 : 2;  // registers: kHeads · 8 floats each for q and the output
  static constexpr int kKeysPerWarpRound = kKeysPerStep * kSteps;
  static constexpr int kKeysPerRound = kKeysPerWarpRound * kDecodeWarps;
};

// A decode sequence's splits added in split order, for its query heads h0 .. h0 + heads - 1: out = Σ o_i 2^(m_i - M)
// / Σ l_i 2^(m_i - M). Run by the last block of the sequence's (KV head, head chunk) to finish; the other blocks'
// partials are read through L2 (__ldcg), after the arrival counter said they are all there.
template <int kHeadDim, int kThreads>
__device__ __forceinline__ void merge_splits(const AttentionParams& p, int s, int t, int h0, int heads, int n_splits,
                                             int max_splits) {
  for (int idx = threadIdx.x; idx < heads * kHeadDim; idx += kThreads) {
    const int h = h0 + idx / kHeadDim, d = idx % kHeadDim;
    const float* ws = static_cast<const float*>(p.workspace) + (int64_t(s) * p.num_qo_heads + h) * max_splits * (kHeadDim + 2);
    float mx = -INFINITY;
    for (int i = 0; i < n_splits; ++i) mx = fmaxf(mx, __ldcg(ws + i * (kHeadDim + 2) + kHeadDim));
    float sum = 0.0f, o = 0.0f;
    for (int i = 0; i < n_splits; ++i) {
      const float* part = ws + i * (kHeadDim + 2);
      const float wt = exp2f(__ldcg(part + kHeadDim) - mx);
      sum += __ldcg(part + kHeadDim + 1) * wt;
      o += __ldcg(part + d) * wt;
    }
    p.out[int64_t(t) * p.ld_out + int64_t(h) * kHeadDim + d] = f32_to_bf16(o / sum);
  }
}

// The end of both decode kernels: the block's warps merged in warp order (their running max, sum and output of each
// row r < heads, query head h0 + r, through m_of(w, r), l_of(w, r), acc_of(w, r, d)), then the output (one split)
// or the split's partials in the workspace; the last block of the sequence's (KV head, head chunk) to arrive then
// merges the splits (merge_splits). Its counter, p.split_counters[s · gridDim.y + blockIdx.y], counts the
// arrivals and is left at zero for the next call.
template <int kHeadDim, int kWarps, class M, class L, class Acc>
__device__ __forceinline__ void merge_warps_and_store(const AttentionParams& p, int s, int t, int h0, int heads,
                                                      int split, int n_splits, int max_splits, M m_of, L l_of,
                                                      Acc acc_of) {
  for (int idx = threadIdx.x; idx < heads * kHeadDim; idx += kWarps * 32) {
    const int r = idx / kHeadDim, d = idx % kHeadDim;
    float mx = m_of(0, r);
#pragma unroll
    for (int w = 1; w < kWarps; ++w) mx = fmaxf(mx, m_of(w, r));
    float sum = 0.0f, o = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float wt = exp2f(m_of(w, r) - mx);  // 0 for a warp that saw no key
      sum += l_of(w, r) * wt;
      o += acc_of(w, r, d) * wt;
    }
    const int h = h0 + r;
    if (n_splits == 1) {
      p.out[int64_t(t) * p.ld_out + int64_t(h) * kHeadDim + d] = f32_to_bf16(o / sum);
    } else {
      float* ws = static_cast<float*>(p.workspace) +
                  ((int64_t(s) * p.num_qo_heads + h) * max_splits + split) * (kHeadDim + 2);
      ws[d] = o;
      if (d == 0) {
        ws[kHeadDim] = mx;
        ws[kHeadDim + 1] = sum;
      }
    }
  }
  if (n_splits == 1) return;
  __shared__ int last_to_arrive;
  __threadfence();  // this block's partials, visible to whichever block merges
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t* counter = p.split_counters + int64_t(s) * gridDim.y + blockIdx.y;
    last_to_arrive = atomicAdd(counter, 1) == n_splits - 1;
    if (last_to_arrive) *counter = 0;  // every other block of the sequence's head chunk has arrived
  }
  __syncthreads();
  if (!last_to_arrive) return;
  __threadfence();
  merge_splits<kHeadDim, kWarps * 32>(p, s, t, h0, heads, n_splits, max_splits);
}

// Where a decode block works: its sequence s (query token t), KV head, head chunk and split, and the split's keys
// [k_begin, k_end) of the n_keys the token sees. False when the block has nothing to do (a prefill chunk, one token
// included: attention_is_decode; or a split past the sequence's: the grid is sized for the longest).
struct DecodeBlock {
  int s, t, kv_head, chunk, split, n_splits, k_begin, k_end;
};
__device__ __forceinline__ bool decode_block(const AttentionBatch& b, int head_chunks, DecodeBlock& db) {
  db.s = blockIdx.x;
  db.kv_head = blockIdx.y / head_chunks, db.chunk = blockIdx.y % head_chunks;
  db.split = blockIdx.z;
  db.t = b.cu_seqlens[db.s];
  if (!attention_is_decode(b, db.s, b.cu_seqlens[db.s + 1] - db.t)) return false;  // a prefill chunk
  const int n_keys = visible_keys(b, db.s, db.t);
  db.n_splits = attention_num_splits(n_keys);
  if (n_keys < 1 || db.split >= db.n_splits) return false;
  const int per_split = attention_keys_per_split(n_keys);
  db.k_begin = db.split * per_split, db.k_end = min(db.k_begin + per_split, n_keys);
  return true;
}

// FLINT_ATTN_AHEAD (AttentionParams::l2_ahead_bytes): before the PDL wait, the first head chunk's block of each
// (sequence, KV head, split) asks L2 for the split's pages, this KV head's slots of each in K and in V, one bulk
// prefetch each, when the whole call's K and V (num_seqs · max_kv_len keys) fit the budget. Only a hint: what it
// reads (the step's index arrays, from the host before the step's first kernel) steers the prefetch and nothing
// else (the kernel reads them again after the wait), and every block id is clamped into the cache, so a stale or
// bad value can only fetch the wrong lines (launch.cuh).
__device__ __forceinline__ void kv_ahead(const AttentionParams& p, int head_chunks) {
  const AttentionBatch& b = p.batch;
  const PagedKvCache& c = p.cache;
  const int64_t key_bytes = int64_t(4) * c.num_kv_heads * c.head_dim;  // K and V, bf16
  if (p.l2_ahead_bytes <= 0 || int64_t(b.num_seqs) * b.max_kv_len * key_bytes > p.l2_ahead_bytes) return;
  DecodeBlock db;
  if (!decode_block(b, head_chunks, db) || db.chunk != 0) return;
  const int first = db.k_begin / c.block_size, pages = (db.k_end - 1) / c.block_size - first + 1;
  const uint32_t bytes = uint32_t((int64_t(c.block_size - 1) * c.slot_stride + c.head_dim) * 2);  // 16-byte units
  const int32_t* table = b.block_table + int64_t(db.s) * b.max_blocks_per_seq;
  for (int i = threadIdx.x; i < 2 * pages; i += blockDim.x) {
    const int32_t block = min(max(table[first + i / 2], 0), c.num_blocks - 1);
    prefetch_l2((i % 2 ? c.v : c.k) + c.offset(block, 0, db.kv_head), bytes);
  }
}

template <int kHeadDim, int kHeads>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    decode_kernel(const AttentionParams p, int group, int head_chunks, int max_splits, float scale_log2) {
  pdl_weights_first();
  kv_ahead(p, head_chunks);
  pdl_begin();
  using S = DecodeShape<kHeadDim, kHeads>;
  const AttentionBatch& b = p.batch;
  const PagedKvCache& c = p.cache;
  DecodeBlock db;
  if (!decode_block(b, head_chunks, db)) return;
  const int s = db.s, t = db.t, kv_head = db.kv_head, chunk = db.chunk, split = db.split, n_splits = db.n_splits;
  const int k_begin = db.k_begin, k_end = db.k_end;
  const int h0 = kv_head * group + chunk * kHeads;
  const int heads = min(kHeads, group - chunk * kHeads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sub = lane / S::kLanesPerKey, dl = lane % S::kLanesPerKey;  // key within a step, 8-value part
  const int32_t* table = b.block_table + int64_t(s) * b.max_blocks_per_seq;

  float q[kHeads][8];
#pragma unroll
  for (int g = 0; g < kHeads; ++g) {
    if (g < heads) {
      const uint4 v = *reinterpret_cast<const uint4*>(p.q + int64_t(t) * p.ld_q + int64_t(h0 + g) * kHeadDim + dl * 8);
      unpack8(v, q[g]);
#pragma unroll
      for (int i = 0; i < 8; ++i) q[g][i] *= scale_log2;
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) q[g][i] = 0.0f;
    }
  }
  float m[kHeads], l[kHeads], acc[kHeads][8];
#pragma unroll
  for (int g = 0; g < kHeads; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.0f;
  }

  for (int base = k_begin + warp * S::kKeysPerWarpRound; base < k_end; base += S::kKeysPerRound) {
    uint4 kraw[S::kSteps], vraw[S::kSteps];
    bool ok[S::kSteps];
#pragma unroll
    for (int u = 0; u < S::kSteps; ++u) {
      const int j = base + u * S::kKeysPerStep + sub;
      ok[u] = j < k_end;
      kraw[u] = vraw[u] = make_uint4(0, 0, 0, 0);
      if (ok[u]) {
        const int64_t off = key_offset(c, table, j, kv_head) + dl * 8;
        kraw[u] = __ldg(reinterpret_cast<const uint4*>(c.k + off));
        vraw[u] = __ldg(reinterpret_cast<const uint4*>(c.v + off));
      }
    }
    float sc[S::kSteps][kHeads];
#pragma unroll
    for (int u = 0; u < S::kSteps; ++u) {
      float kf[8];
      unpack8(kraw[u], kf);
#pragma unroll
      for (int g = 0; g < kHeads; ++g) {
        float d = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) d = fmaf(q[g][i], kf[i], d);
#pragma unroll
        for (int off = S::kLanesPerKey / 2; off > 0; off /= 2) d += __shfl_xor_sync(0xFFFFFFFFu, d, off);
        sc[u][g] = ok[u] ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int g = 0; g < kHeads; ++g) {
      float round_max = sc[0][g];
#pragma unroll
      for (int u = 1; u < S::kSteps; ++u) round_max = fmaxf(round_max, sc[u][g]);
#pragma unroll
      for (int off = S::kLanesPerKey; off < 32; off *= 2)
        round_max = fmaxf(round_max, __shfl_xor_sync(0xFFFFFFFFu, round_max, off));
      const float new_m = fmaxf(m[g], round_max);  // the same in every lane of the warp
      if (new_m == -INFINITY) continue;             // no key of this round in the warp
      const float alpha = exp2f(m[g] - new_m);      // 0 on the first round (m = -inf)
      m[g] = new_m;
      l[g] *= alpha;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] *= alpha;
#pragma unroll
      for (int u = 0; u < S::kSteps; ++u) {
        const float pr = exp2f(sc[u][g] - new_m);  // 0 for a masked key
        float vf[8];
        unpack8(vraw[u], vf);
        l[g] += pr;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(pr, vf[i], acc[g][i]);
      }
    }
  }

  // The warp's key groups (lanes with the same dl) hold partial sums over different keys: add them up.
#pragma unroll
  for (int g = 0; g < kHeads; ++g) {
#pragma unroll
    for (int off = S::kLanesPerKey; off < 32; off *= 2) {
      l[g] += __shfl_xor_sync(0xFFFFFFFFu, l[g], off);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] += __shfl_xor_sync(0xFFFFFFFFu, acc[g][i], off);
    }
  }
  __shared__ float sm_m[kDecodeWarps][kHeads], sm_l[kDecodeWarps][kHeads];
  __shared__ float sm_acc[kDecodeWarps][kHeads][kHeadDim];
  if (sub == 0) {
#pragma unroll
    for (int g = 0; g < kHeads; ++g) {
#pragma unroll
      for (int i = 0; i < 8; ++i) sm_acc[warp][g][dl * 8 + i] = acc[g][i];
      if (lane == 0) {
        sm_m[warp][g] = m[g];
        sm_l[warp][g] = l[g];
      }
    }
  }
  __syncthreads();
  merge_warps_and_store<kHeadDim, kDecodeWarps>(
      p, s, t, h0, heads, split, n_splits, max_splits, [&](int w, int r) { return sm_m[w][r]; },
      [&](int w, int r) { return sm_l[w][r]; }, [&](int w, int r, int d) { return sm_acc[w][r][d]; });
}

// ---- The tensor-core decode kernel (FLINT_ATTN_DECODE=mma): a block (4 warps) per (sequence, KV head, head
// chunk of up to 16 query heads, split). The chunk's query heads are the 16 rows of one m16n8k16 A fragment (rows
// past the group's heads are zero), so a 16-key tile costs head_dim / 16 · 2 mma for S = Q·Kᵀ and head_dim / 8 · 2
// for P·V, in place of the SIMT kernel's per-key FMAs and shuffles. Each warp streams its own tiles of the split
// (tiles warp, warp + 4, ...) through a private ring of kStages tiles in shared memory (cp.async, one tile ahead,
// rows padded by 16 bytes so ldmatrix's rows fall in different banks) with its own online softmax; the warps merge
// through shared memory at the end in warp order, and write the output or the split's partials exactly as the SIMT
// kernel does (the last block to finish merges them).
//
// Precision as the SIMT kernel's (the decode tolerance of tests/gpu/attention_gpu_test.cu): q and k are bf16 in
// both, the products exact and summed in fp32; the scale is applied to the fp32 score; P (fp32) goes into the
// tensor core as hi = bf16(P) plus lo = bf16(P - hi), two mma steps, so the weights it applies are within 2^-16
// relative of fp32's (one bf16 step would be 2^-8: the prefill kernel's bound).
constexpr int kMmaDecodeWarps = 4, kMmaDecodeKeys = 16, kMmaDecodeRows = 16;

template <int kHeadDim>
struct MmaDecodeShape {
  static constexpr int kLds = kHeadDim + 8;                   // shared-memory row of a K or V tile, elements
  static constexpr int kStages = 2;                           // tiles per warp's ring: one computed, one loading
  static constexpr int kTileElems = kMmaDecodeKeys * kLds;    // one K (or V) tile
  static constexpr int kWarpElems = kStages * 2 * kTileElems;  // a warp's ring: kStages K tiles, then V tiles
  static constexpr int kAccLd = kHeadDim + 4;                 // the merge's fp32 rows (padded: fewer conflicts)
  static constexpr size_t kRingBytes = size_t(kMmaDecodeWarps) * kWarpElems * sizeof(bf16_bits);
  static constexpr size_t kMergeBytes = size_t(kMmaDecodeWarps) * kMmaDecodeRows * kAccLd * sizeof(float);
  static constexpr size_t kSmemBytes = kRingBytes > kMergeBytes ? kRingBytes : kMergeBytes;
};

// x0, x1 as bf16 pairs hi (bf16(x)) and lo (bf16(x - hi)), so that hi + lo is x within 2^-16 relative.
__device__ __forceinline__ void split_bf16x2(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  hi = pack_bf16x2(x0, x1);
  lo = pack_bf16x2(x0 - __uint_as_float(hi << 16), x1 - __uint_as_float(hi & 0xFFFF0000u));
}

template <int kHeadDim>
__global__ void __launch_bounds__(kMmaDecodeWarps * 32)
    decode_mma_kernel(const AttentionParams p, int group, int head_chunks, int max_splits, float scale_log2) {
  pdl_weights_first();
  kv_ahead(p, head_chunks);
  pdl_begin();
  using S = MmaDecodeShape<kHeadDim>;
  constexpr int kChunks = kHeadDim / 8;  // 16-byte pieces per row
  const AttentionBatch& b = p.batch;
  const PagedKvCache& c = p.cache;
  DecodeBlock db;
  if (!decode_block(b, head_chunks, db)) return;
  const int s = db.s, t = db.t, kv_head = db.kv_head, chunk = db.chunk, split = db.split, n_splits = db.n_splits;
  const int k_begin = db.k_begin, k_end = db.k_end;
  const int chunk_heads = (group + head_chunks - 1) / head_chunks;  // <= 16 (the launcher's chunking)
  const int h0 = kv_head * group + chunk * chunk_heads;
  const int heads = min(chunk_heads, group - chunk * chunk_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const int32_t* table = b.block_table + int64_t(s) * b.max_blocks_per_seq;

  extern __shared__ uint4 smem_raw[];
  bf16_bits* sk = reinterpret_cast<bf16_bits*>(smem_raw) + warp * S::kWarpElems;
  bf16_bits* sv = sk + S::kStages * S::kTileElems;

  // The warp's tiles: tile i of the split holds keys k_begin + 16i .. + 15; warp w takes i = w, w + 4, ...
  const int n_tiles = (k_end - k_begin + kMmaDecodeKeys - 1) / kMmaDecodeKeys;
  const int my_tiles = warp < n_tiles ? (n_tiles - warp + kMmaDecodeWarps - 1) / kMmaDecodeWarps : 0;
  // Tiles start at multiples of 16 keys (splits at multiples of 128), so with a block size that is a multiple of
  // 16 a tile lies in one cache block: one block-table read per tile instead of one per key.
  const bool tile_in_one_block = c.block_size % kMmaDecodeKeys == 0;
  auto load_tile = [&](int stage, int u) {  // the warp's u-th tile; keys past the split are zero-filled
    const int j0 = k_begin + (warp + u * kMmaDecodeWarps) * kMmaDecodeKeys;
    const int64_t base = tile_in_one_block ? key_offset(c, table, j0, kv_head) : 0;
#pragma unroll
    for (int ch = lane; ch < kMmaDecodeKeys * kChunks; ch += 32) {
      const int r = ch / kChunks, cc = ch % kChunks, j = j0 + r;
      const bool fill = j < k_end;
      const int64_t key = tile_in_one_block ? base + int64_t(r) * c.slot_stride : fill ? key_offset(c, table, j, kv_head) : 0;
      const int64_t off = fill ? key + cc * 8 : 0;
      cp_async16(sk + stage * S::kTileElems + r * S::kLds + cc * 8, c.k + off, fill);
      cp_async16(sv + stage * S::kTileElems + r * S::kLds + cc * 8, c.v + off, fill);
    }
  };
#pragma unroll
  for (int u = 0; u < S::kStages - 1; ++u) {
    if (u < my_tiles) load_tile(u, u);
    cp_async_commit();
  }

  // q as the A fragment of each 16-value k step: a0 (row g, values 2tq, 2tq + 1), a1 (row g + 8), a2 and a3 the
  // same 8 values on. Row r is query head h0 + r; rows past the chunk's heads are zero.
  uint32_t qa[kHeadDim / 16][4];
  {
    const bf16_bits* q0 = p.q + int64_t(t) * p.ld_q + int64_t(h0) * kHeadDim;
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = g + 8 * (e % 2), col = kk * 16 + 2 * tq + 8 * (e / 2);
        qa[kk][e] = r < heads ? *reinterpret_cast<const uint32_t*>(q0 + r * kHeadDim + col) : 0u;
      }
  }
  float o[kHeadDim / 8][4];
#pragma unroll
  for (int nd = 0; nd < kHeadDim / 8; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows g and g + 8

  for (int u = 0; u < my_tiles; ++u) {
    const int ahead = u + S::kStages - 1;
    if (ahead < my_tiles) load_tile(ahead % S::kStages, ahead);
    cp_async_commit();
    cp_async_wait<S::kStages - 1>();  // this lane's copies of tile u are done
    __syncwarp();                     // and every lane's are visible
    const bf16_bits* kt = sk + (u % S::kStages) * S::kTileElems;
    const bf16_bits* vt = sv + (u % S::kStages) * S::kTileElems;

    float sc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};  // keys 0..7 and 8..15 of the tile
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      uint32_t kb[4];  // b0, b1 of keys 0..7, then of keys 8..15
      ldmatrix_x4<false>(kb, kt + (lane % 8 + (lane / 16) * 8) * S::kLds + kk * 16 + ((lane / 8) % 2) * 8);
      mma_m16n8k16(sc[0], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], kb[0], kb[1]);
      mma_m16n8k16(sc[1], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], kb[2], kb[3]);
    }
    // Keys past the split masked, the scale applied in log2 units, then the online softmax per row (a row's 16
    // scores live in the 4 lanes of a quad).
    const int j0 = k_begin + (warp + u * kMmaDecodeWarps) * kMmaDecodeKeys;
    float row_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = j0 + nt * 8 + 2 * tq + (e & 1);
        sc[nt][e] = j < k_end ? sc[nt][e] * scale_log2 : -INFINITY;
        row_max[e / 2] = fmaxf(row_max[e / 2], sc[nt][e]);
      }
    float alpha[2], mu[2];
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      row_max[hi] = fmaxf(row_max[hi], __shfl_xor_sync(0xFFFFFFFFu, row_max[hi], 1));
      row_max[hi] = fmaxf(row_max[hi], __shfl_xor_sync(0xFFFFFFFFu, row_max[hi], 2));
      const float new_m = fmaxf(m[hi], row_max[hi]);  // finite: a tile has at least one key of the split
      mu[hi] = new_m;
      alpha[hi] = exp2f(m[hi] - new_m);  // 0 on the warp's first tile (m = -inf)
      m[hi] = new_m;
      l[hi] *= alpha[hi];
    }
#pragma unroll
    for (int nd = 0; nd < kHeadDim / 8; ++nd) {
      o[nd][0] *= alpha[0];
      o[nd][1] *= alpha[0];
      o[nd][2] *= alpha[1];
      o[nd][3] *= alpha[1];
    }
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        sc[nt][e] = exp2f(sc[nt][e] - mu[e / 2]);  // 0 for a masked key
        l[e / 2] += sc[nt][e];
      }
    // O += P·V: the two score fragments are the A fragment of the tile's 16-key step, as hi and lo parts.
    uint32_t ph[4], pl[4];
    split_bf16x2(sc[0][0], sc[0][1], ph[0], pl[0]);
    split_bf16x2(sc[0][2], sc[0][3], ph[1], pl[1]);
    split_bf16x2(sc[1][0], sc[1][1], ph[2], pl[2]);
    split_bf16x2(sc[1][2], sc[1][3], ph[3], pl[3]);
#pragma unroll
    for (int ndp = 0; ndp < kHeadDim / 16; ++ndp) {
      uint32_t vb[4];  // b0, b1 of value columns 16ndp .. +7, then of +8 .. +15
      ldmatrix_x4<true>(vb, vt + (lane % 8 + ((lane / 8) % 2) * 8) * S::kLds + ndp * 16 + (lane / 16) * 8);
      mma_m16n8k16(o[2 * ndp], pl[0], pl[1], pl[2], pl[3], vb[0], vb[1]);
      mma_m16n8k16(o[2 * ndp + 1], pl[0], pl[1], pl[2], pl[3], vb[2], vb[3]);
      mma_m16n8k16(o[2 * ndp], ph[0], ph[1], ph[2], ph[3], vb[0], vb[1]);
      mma_m16n8k16(o[2 * ndp + 1], ph[0], ph[1], ph[2], ph[3], vb[2], vb[3]);
    }
    __syncwarp();  // every lane is done with this stage before a later iteration refills it
  }
  cp_async_wait<0>();

  // The warps' rows merged in warp order, as the SIMT kernel merges its warps; the rings become the merge buffer.
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    l[hi] += __shfl_xor_sync(0xFFFFFFFFu, l[hi], 1);
    l[hi] += __shfl_xor_sync(0xFFFFFFFFu, l[hi], 2);
  }
  __shared__ float sm_m[kMmaDecodeWarps][kMmaDecodeRows], sm_l[kMmaDecodeWarps][kMmaDecodeRows];
  float* sm_acc = reinterpret_cast<float*>(smem_raw);  // [warp][row][kAccLd]
  __syncthreads();  // every warp is done with its ring
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int r = g + 8 * hi;
    float* dst = sm_acc + (warp * kMmaDecodeRows + r) * S::kAccLd;
#pragma unroll
    for (int nd = 0; nd < kHeadDim / 8; ++nd) {
      dst[nd * 8 + 2 * tq] = o[nd][2 * hi];
      dst[nd * 8 + 2 * tq + 1] = o[nd][2 * hi + 1];
    }
    if (tq == 0) {
      sm_m[warp][r] = m[hi];
      sm_l[warp][r] = l[hi];
    }
  }
  __syncthreads();
  merge_warps_and_store<kHeadDim, kMmaDecodeWarps>(
      p, s, t, h0, heads, split, n_splits, max_splits, [&](int w, int r) { return sm_m[w][r]; },
      [&](int w, int r) { return sm_l[w][r]; },
      [&](int w, int r, int d) { return sm_acc[(w * kMmaDecodeRows + r) * S::kAccLd + d]; });
}

template <int kHeadDim, int kHeads>
cudaError_t launch_decode_simt(const AttentionParams& p, int group, int head_chunks, int max_splits, float scale_log2,
                   cudaStream_t stream) {
  const dim3 grid(unsigned(p.batch.num_seqs), unsigned(p.cache.num_kv_heads * head_chunks), unsigned(max_splits));
  return launch_kernel(decode_kernel<kHeadDim, kHeads>, grid, dim3(kDecodeWarps * 32), 0, stream, p, group,
                       head_chunks, max_splits, scale_log2);
}

template <int kHeadDim>
cudaError_t launch_decode_simt_heads(const AttentionParams& p, int group, int max_splits, float scale_log2, cudaStream_t stream) {
  // Up to 8 query heads per block (registers); a larger group is cut into equal chunks.
  const int head_chunks = (group + 7) / 8, heads = (group + head_chunks - 1) / head_chunks;
  switch (heads) {
    case 1: return launch_decode_simt<kHeadDim, 1>(p, group, head_chunks, max_splits, scale_log2, stream);
    case 2: return launch_decode_simt<kHeadDim, 2>(p, group, head_chunks, max_splits, scale_log2, stream);
    case 3: return launch_decode_simt<kHeadDim, 3>(p, group, head_chunks, max_splits, scale_log2, stream);
    case 4: return launch_decode_simt<kHeadDim, 4>(p, group, head_chunks, max_splits, scale_log2, stream);
    case 5: return launch_decode_simt<kHeadDim, 5>(p, group, head_chunks, max_splits, scale_log2, stream);
    case 6: return launch_decode_simt<kHeadDim, 6>(p, group, head_chunks, max_splits, scale_log2, stream);
    case 7: return launch_decode_simt<kHeadDim, 7>(p, group, head_chunks, max_splits, scale_log2, stream);
    default: return launch_decode_simt<kHeadDim, 8>(p, group, head_chunks, max_splits, scale_log2, stream);
  }
}


template <int kHeadDim>
cudaError_t launch_decode_mma(const AttentionParams& p, int group, int max_splits, float scale_log2,
                              cudaStream_t stream) {
  using S = MmaDecodeShape<kHeadDim>;
  static std::once_flag raised;
  static cudaError_t raise_error = cudaSuccess;
  std::call_once(raised, [] {
    raise_error = cudaFuncSetAttribute(decode_mma_kernel<kHeadDim>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(S::kSmemBytes));
  });
  if (raise_error != cudaSuccess) return raise_error;
  const int head_chunks = (group + kMmaDecodeRows - 1) / kMmaDecodeRows;  // equal chunks of at most 16 heads
  const dim3 grid(unsigned(p.batch.num_seqs), unsigned(p.cache.num_kv_heads * head_chunks), unsigned(max_splits));
  return launch_kernel(decode_mma_kernel<kHeadDim>, grid, dim3(kMmaDecodeWarps * 32), S::kSmemBytes, stream, p,
                       group, head_chunks, max_splits, scale_log2);
}

template <int kHeadDim>
cudaError_t launch_decode(const AttentionParams& p, int group, int max_splits, float scale_log2, bool mma,
                          cudaStream_t stream) {
  return mma ? launch_decode_mma<kHeadDim>(p, group, max_splits, scale_log2, stream)
             : launch_decode_simt_heads<kHeadDim>(p, group, max_splits, scale_log2, stream);
}

}  // namespace

cudaError_t attn::launch_decode_attention(const AttentionParams& p, int group, int max_splits, float scale_log2,
                                          bool mma, cudaStream_t stream) {
  return p.cache.head_dim == 64 ? launch_decode<64>(p, group, max_splits, scale_log2, mma, stream)
                                : launch_decode<128>(p, group, max_splits, scale_log2, mma, stream);
}

}  // namespace flint::cuda
