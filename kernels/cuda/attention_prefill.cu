// The prefill attention kernel (sequences with more than one query token) and its launcher. See attention.h for the
// design and kernels/attention_params.h for the layout and the batch contract.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <mutex>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.cuh"

namespace flint::cuda {

namespace {

using namespace attn;

// ---- Prefill: flash-attention-2. A block (4 warps) per (64-row query tile, KV head, sequence); tile row r is
// (token r / group, query head kv_head · group + r % group) of the sequence, so the group's heads share every K/V
// tile. Warp w owns rows 16w .. 16w+15 as one m16 fragment; S = Q·Kᵀ over 64-key tiles (eight n8 tiles), the
// online softmax in registers (each row's values live in the 4 lanes of a quad), then O += P·V with P rounded to
// bf16 as the A operand. K and V tiles come through the block table with cp.async, two stages, rows padded by 16
// bytes so ldmatrix's eight row addresses fall in different banks.
constexpr int kPrefillWarps = 4, kPrefillRows = 64, kPrefillKeys = kAttnPrefillKeyTile;

template <int kHeadDim>
struct PrefillShape {
  static constexpr int kLds = kHeadDim + 8;  // shared-memory row, elements
  static constexpr int kTileElems = kPrefillRows * kLds;
  static constexpr size_t kSmemBytes = size_t(5) * kTileElems * sizeof(bf16_bits);  // Q, K×2, V×2
};

// The wgmma variant (kWgmma, sm_90a; FLINT_ATTN_PREFILL=wgmma): the same block, rows, tiles, softmax and P, with
// the warpgroup's two products as wgmma: S = Q·Kᵀ as wgmma.m64n64k16 with Q's fragments from registers and the K
// tile read from shared memory (keys × 64-value rows, the 128-byte swizzle), and O += P·V as wgmma.m64n{64,128}k16
// with P's fragments from registers and Vᵀ from shared memory, transposed there from the V tile by ldmatrix.trans
// each tile. A wgmma k16 step sums the same 16 products onto the same accumulator as an mma.sync one, in the same
// order, and on the H200 rounds as it does (docs/perf.md, the wgmma matmul), so both variants give the same bits
// (the GPU tests check it). Shared memory: K, 2 stages (1024-byte aligned), then Vᵀ, Q and V (2 stages), padded.
// Its blocks take the row tiles longest first (below); the outputs do not depend on the order.
template <int kHeadDim>
struct PrefillWgmmaShape {
  static constexpr int kKTileBytes = kPrefillKeys * kHeadDim * 2;  // 64 keys, in 64-value regions of 8 KiB
  static constexpr int kVtBytes = kHeadDim * kPrefillKeys * 2;     // head_dim rows of 64 keys (128 bytes)
  static constexpr size_t kSmemBytes =
      1024 + 2 * size_t(kKTileBytes) + kVtBytes + 3 * PrefillShape<kHeadDim>::kTileElems * sizeof(bf16_bits);
};

template <int kHeadDim, bool kWgmma>
__global__ void __launch_bounds__(kPrefillWarps * 32) prefill_kernel(const AttentionParams p, int group, float scale_log2) {
  pdl_begin();
  using S = PrefillShape<kHeadDim>;
  using W = PrefillWgmmaShape<kHeadDim>;
  constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  const AttentionBatch& b = p.batch;
  const PagedKvCache& c = p.cache;
  const int s = blockIdx.z, kv_head = blockIdx.y;
  const int t0 = b.cu_seqlens[s], q_len = b.cu_seqlens[s + 1] - t0;
  if (q_len < 1 || attention_is_decode(b, s, q_len)) return;  // the decode kernel's sequence
  // kWgmma: the row tiles in reverse, so the causal mask's longest tiles (the last rows see the most keys) start
  // first and the short ones fill the tail of the grid.
  const int tile = kWgmma ? int(gridDim.x) - 1 - int(blockIdx.x) : int(blockIdx.x);
  const int rows = q_len * group, row0 = tile * kPrefillRows;
  if (row0 >= rows) return;
  const int kv_len = b.kv_lens[s];
  const int last_row = min(row0 + kPrefillRows, rows) - 1;
  const int tile_keys = max(0, min(b.positions[t0 + last_row / group] + 1, kv_len));
  const int n_tiles = (tile_keys + kPrefillKeys - 1) / kPrefillKeys;
  const int32_t* table = b.block_table + int64_t(s) * b.max_blocks_per_seq;

  extern __shared__ uint4 smem_raw[];
  bf16_bits* sq = reinterpret_cast<bf16_bits*>(smem_raw);
  bf16_bits* sk = sq + S::kTileElems;      // two stages
  bf16_bits* sv = sk + 2 * S::kTileElems;  // two stages
  unsigned char* kw = nullptr;             // kWgmma: the swizzled K stages, then Vᵀ
  unsigned char* vtw = nullptr;
  if constexpr (kWgmma) {
    unsigned char* base = reinterpret_cast<unsigned char*>(smem_raw);
    kw = base + (1024 - shared_address(base) % 1024) % 1024;
    vtw = kw + 2 * W::kKTileBytes;
    sq = reinterpret_cast<bf16_bits*>(vtw + W::kVtBytes);
    sv = sq + S::kTileElems;
  }
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, tq = lane % 4;

  for (int ch = tid; ch < kPrefillRows * kChunks; ch += kPrefillWarps * 32) {
    const int r = ch / kChunks, cc = ch % kChunks, gr = row0 + r;
    const bool fill = gr < rows;
    const bf16_bits* src = fill ? p.q + int64_t(t0 + gr / group) * p.ld_q + int64_t(kv_head * group + gr % group) * kHeadDim + cc * 8 : p.q;
    cp_async16(sq + r * S::kLds + cc * 8, src, fill);
  }
  auto load_kv = [&](int stage, int j0) {
    for (int ch = tid; ch < kPrefillKeys * kChunks; ch += kPrefillWarps * 32) {
      const int r = ch / kChunks, cc = ch % kChunks, j = j0 + r;
      const bool fill = j < tile_keys;
      const int64_t off = fill ? key_offset(c, table, j, kv_head) + cc * 8 : 0;
      if constexpr (kWgmma)  // key r's 16-byte piece cc: 64-value region cc / 8, slot (cc % 8) ^ (r % 8)
        cp_async16(kw + stage * W::kKTileBytes + (cc / 8) * 8192 + r * 128 + ((cc % 8) ^ (r & 7)) * 16, c.k + off, fill);
      else
        cp_async16(sk + stage * S::kTileElems + r * S::kLds + cc * 8, c.k + off, fill);
      cp_async16(sv + stage * S::kTileElems + r * S::kLds + cc * 8, c.v + off, fill);
    }
  };
  if (n_tiles > 0) load_kv(0, 0);
  cp_async_commit();

  // This lane's two rows (g and g + 8 of the warp's 16) and how many keys each sees.
  int lim[2];
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int gr = row0 + warp * 16 + g + 8 * hi;
    lim[hi] = gr < rows ? min(b.positions[t0 + gr / group] + 1, kv_len) : 0;
  }
  float o[kHeadDim / 8][4];
#pragma unroll
  for (int nd = 0; nd < kHeadDim / 8; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  uint32_t qa[kHeadDim / 16][4];

  for (int it = 0; it < n_tiles; ++it) {
    const int stage = it & 1;
    if (it + 1 < n_tiles) load_kv(stage ^ 1, (it + 1) * kPrefillKeys);
    cp_async_commit();
    cp_async_wait<1>();  // everything but the tile just requested: Q and tile `it`
    if constexpr (kWgmma) fence_proxy_async();  // this thread's K copies, seen by the wgmmas (async proxy)
    __syncthreads();
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < kHeadDim / 16; ++kk)
        ldmatrix_x4<false>(qa[kk], sq + (warp * 16 + lane % 16) * S::kLds + kk * 16 + (lane / 16) * 8);
    }
    const bf16_bits* kt = sk + stage * S::kTileElems;
    const bf16_bits* vt = sv + stage * S::kTileElems;

    float sc[kPrefillKeys / 8][4];
#pragma unroll
    for (int nt = 0; nt < kPrefillKeys / 8; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
    if constexpr (kWgmma) {
      // Vᵀ for this tile's P·V: the V tile's 8×8 blocks (keys 8a.., values 8b..) read transposed, so lane l's
      // register of a block holds keys 8a + 2(l % 4), +1 of value 8b + l / 4; stored as row 8b + l / 4 of Vᵀ (64
      // keys, 128 bytes) in the swizzled layout. A warp does a quarter of the blocks, four per ldmatrix.
#pragma unroll
      for (int i = 0; i < kHeadDim / 16; ++i) {
        const int q4 = warp + kPrefillWarps * i, mine = 4 * q4 + lane / 8;  // the block whose row lane % 8 it gives
        uint32_t r[4];
        ldmatrix_x4<true>(r, vt + (8 * (mine % 8) + lane % 8) * S::kLds + 8 * (mine / 8));
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int blk = 4 * q4 + x, d = 8 * (blk / 8) + lane / 4;
          *reinterpret_cast<uint32_t*>(vtw + d * 128 + ((blk % 8) ^ (d & 7)) * 16 + 4 * (lane % 4)) = r[x];
        }
      }
      fence_proxy_async();  // the Vᵀ stores, seen by the P·V wgmmas after the barrier below
      float(&s_acc)[kPrefillKeys / 2] = reinterpret_cast<float(&)[kPrefillKeys / 2]>(sc);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kHeadDim / 16; ++kk)
        wgmma_m64n64k16(s_acc, qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3],
                        wgmma_desc_sw128(kw + stage * W::kKTileBytes + (kk / 4) * 8192, (kk % 4) * 32));
      wgmma_commit();
      wgmma_wait<0>();
      wgmma_fence_operand(s_acc);
    } else {
#pragma unroll
      for (int kk = 0; kk < kHeadDim / 16; ++kk) {
#pragma unroll
        for (int np = 0; np < kPrefillKeys / 16; ++np) {
          uint32_t kb[4];  // b0, b1 of key tile 2np, then of 2np + 1
          ldmatrix_x4<false>(kb, kt + (np * 16 + lane % 8 + (lane / 16) * 8) * S::kLds + kk * 16 + ((lane / 8) % 2) * 8);
          mma_m16n8k16(sc[2 * np], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], kb[0], kb[1]);
          mma_m16n8k16(sc[2 * np + 1], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], kb[2], kb[3]);
        }
      }
    }
    // Mask (causal and past the cache), scale into log2 units, online softmax per row.
    const int j0 = it * kPrefillKeys;
    float row_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kPrefillKeys / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = j0 + nt * 8 + 2 * tq + (e & 1), hi = e / 2;
        sc[nt][e] = j < lim[hi] ? sc[nt][e] * scale_log2 : -INFINITY;
        row_max[hi] = fmaxf(row_max[hi], sc[nt][e]);
      }
    }
    float alpha[2], mu[2];
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      row_max[hi] = fmaxf(row_max[hi], __shfl_xor_sync(0xFFFFFFFFu, row_max[hi], 1));
      row_max[hi] = fmaxf(row_max[hi], __shfl_xor_sync(0xFFFFFFFFu, row_max[hi], 2));
      const float new_m = fmaxf(m[hi], row_max[hi]);
      mu[hi] = new_m == -INFINITY ? 0.0f : new_m;  // a row that has seen no key yet keeps p = 0, no NaN
      alpha[hi] = exp2f(m[hi] - mu[hi]);
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
    for (int nt = 0; nt < kPrefillKeys / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        sc[nt][e] = exp2f(sc[nt][e] - mu[e / 2]);
        l[e / 2] += sc[nt][e];
      }
    }
    // O += P·V: P's C fragments of key tiles 2ks and 2ks + 1 are exactly the A fragment of the 16-key step ks.
    if constexpr (kWgmma) {
      uint32_t pa[kPrefillKeys / 16][4];
#pragma unroll
      for (int ks = 0; ks < kPrefillKeys / 16; ++ks) {
        pa[ks][0] = pack_bf16x2(sc[2 * ks][0], sc[2 * ks][1]);
        pa[ks][1] = pack_bf16x2(sc[2 * ks][2], sc[2 * ks][3]);
        pa[ks][2] = pack_bf16x2(sc[2 * ks + 1][0], sc[2 * ks + 1][1]);
        pa[ks][3] = pack_bf16x2(sc[2 * ks + 1][2], sc[2 * ks + 1][3]);
      }
      float(&o_acc)[kHeadDim / 2] = reinterpret_cast<float(&)[kHeadDim / 2]>(o);
      __syncthreads();  // Vᵀ written by every warp
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kPrefillKeys / 16; ++ks) {
        if constexpr (kHeadDim == 64)
          wgmma_m64n64k16(o_acc, pa[ks][0], pa[ks][1], pa[ks][2], pa[ks][3], wgmma_desc_sw128(vtw, ks * 32));
        else
          wgmma_m64n128k16(o_acc, pa[ks][0], pa[ks][1], pa[ks][2], pa[ks][3], wgmma_desc_sw128(vtw, ks * 32));
      }
      wgmma_commit();
      wgmma_wait<0>();
      wgmma_fence_operand(o_acc);
      // No barrier here: the next tile's copies go to buffers every warp finished with before the barrier above,
      // and Vᵀ is rewritten only after the next tile's first barrier, which every warp reaches past this wait.
    } else {
#pragma unroll
      for (int ks = 0; ks < kPrefillKeys / 16; ++ks) {
        const uint32_t a0 = pack_bf16x2(sc[2 * ks][0], sc[2 * ks][1]);
        const uint32_t a1 = pack_bf16x2(sc[2 * ks][2], sc[2 * ks][3]);
        const uint32_t a2 = pack_bf16x2(sc[2 * ks + 1][0], sc[2 * ks + 1][1]);
        const uint32_t a3 = pack_bf16x2(sc[2 * ks + 1][2], sc[2 * ks + 1][3]);
#pragma unroll
        for (int ndp = 0; ndp < kHeadDim / 16; ++ndp) {
          uint32_t vb[4];  // b0, b1 of value columns 16ndp .. +7, then of +8 .. +15
          ldmatrix_x4<true>(vb, vt + (ks * 16 + lane % 8 + ((lane / 8) % 2) * 8) * S::kLds + ndp * 16 + (lane / 16) * 8);
          mma_m16n8k16(o[2 * ndp], a0, a1, a2, a3, vb[0], vb[1]);
          mma_m16n8k16(o[2 * ndp + 1], a0, a1, a2, a3, vb[2], vb[3]);
        }
      }
      __syncthreads();  // every warp is done with this stage before the next iteration refills it
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    l[hi] += __shfl_xor_sync(0xFFFFFFFFu, l[hi], 1);
    l[hi] += __shfl_xor_sync(0xFFFFFFFFu, l[hi], 2);
    const int gr = row0 + warp * 16 + g + 8 * hi;
    if (gr >= rows || lim[hi] < 1) continue;
    const float inv = 1.0f / l[hi];
    bf16_bits* dst = p.out + int64_t(t0 + gr / group) * p.ld_out + int64_t(kv_head * group + gr % group) * kHeadDim;
#pragma unroll
    for (int nd = 0; nd < kHeadDim / 8; ++nd) {
      const __nv_bfloat162 v = __floats2bfloat162_rn(o[nd][2 * hi] * inv, o[nd][2 * hi + 1] * inv);
      *reinterpret_cast<__nv_bfloat162*>(dst + nd * 8 + 2 * tq) = v;
    }
  }
}

template <int kHeadDim, bool kWgmma>
cudaError_t launch_prefill(const AttentionParams& p, int group, float scale_log2, cudaStream_t stream) {
  const size_t smem = kWgmma ? PrefillWgmmaShape<kHeadDim>::kSmemBytes : PrefillShape<kHeadDim>::kSmemBytes;
  static std::once_flag raised;
  static cudaError_t raise_error = cudaSuccess;
  std::call_once(raised, [smem] {
    raise_error = cudaFuncSetAttribute(prefill_kernel<kHeadDim, kWgmma>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(smem));
  });
  if (raise_error != cudaSuccess) return raise_error;
  const int row_tiles = (p.batch.max_q_len * group + kPrefillRows - 1) / kPrefillRows;
  const dim3 grid(unsigned(row_tiles), unsigned(p.cache.num_kv_heads), unsigned(p.batch.num_seqs));
  return launch_kernel(prefill_kernel<kHeadDim, kWgmma>, grid, dim3(kPrefillWarps * 32), smem, stream, p, group,
                       scale_log2);
}

}  // namespace

cudaError_t attn::launch_prefill_attention(const AttentionParams& p, int group, float scale_log2, bool wgmma,
                                           cudaStream_t stream) {
  if (wgmma)
    return p.cache.head_dim == 64 ? launch_prefill<64, true>(p, group, scale_log2, stream)
                                  : launch_prefill<128, true>(p, group, scale_log2, stream);
  return p.cache.head_dim == 64 ? launch_prefill<64, false>(p, group, scale_log2, stream)
                                : launch_prefill<128, false>(p, group, scale_log2, stream);
}

}  // namespace flint::cuda
