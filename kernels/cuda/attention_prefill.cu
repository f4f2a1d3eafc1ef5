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

template <int kHeadDim>
__global__ void __launch_bounds__(kPrefillWarps * 32) prefill_kernel(const AttentionParams p, int group, float scale_log2) {
  pdl_begin();
  using S = PrefillShape<kHeadDim>;
  constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  const AttentionBatch& b = p.batch;
  const PagedKvCache& c = p.cache;
  const int s = blockIdx.z, kv_head = blockIdx.y;
  const int t0 = b.cu_seqlens[s], q_len = b.cu_seqlens[s + 1] - t0;
  if (q_len <= 1) return;  // decode's sequence
  const int rows = q_len * group, row0 = blockIdx.x * kPrefillRows;
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

template <int kHeadDim>
cudaError_t launch_prefill(const AttentionParams& p, int group, float scale_log2, cudaStream_t stream) {
  using S = PrefillShape<kHeadDim>;
  static std::once_flag raised;
  static cudaError_t raise_error = cudaSuccess;
  std::call_once(raised, [] {
    raise_error = cudaFuncSetAttribute(prefill_kernel<kHeadDim>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(S::kSmemBytes));
  });
  if (raise_error != cudaSuccess) return raise_error;
  const int row_tiles = (p.batch.max_q_len * group + kPrefillRows - 1) / kPrefillRows;
  const dim3 grid(unsigned(row_tiles), unsigned(p.cache.num_kv_heads), unsigned(p.batch.num_seqs));
  return launch_kernel(prefill_kernel<kHeadDim>, grid, dim3(kPrefillWarps * 32), S::kSmemBytes, stream, p, group,
                       scale_log2);
}

}  // namespace

cudaError_t attn::launch_prefill_attention(const AttentionParams& p, int group, float scale_log2, cudaStream_t stream) {
  return p.cache.head_dim == 64 ? launch_prefill<64>(p, group, scale_log2, stream)
                                : launch_prefill<128>(p, group, scale_log2, stream);
}

size_t attention_prefill_smem_bytes(int32_t head_dim) {
  return head_dim == 64 ? PrefillShape<64>::kSmemBytes : head_dim == 128 ? PrefillShape<128>::kSmemBytes : 0;
}

}  // namespace flint::cuda
