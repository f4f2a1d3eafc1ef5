// The attention kernels: RoPE + KV write and prefill (flash-attention-2 on the tensor cores), and the launchers
// (decode, split over keys and merged, is in attention_decode.cu). See attention.h for the design and kernels/attention_params.h for the
// layout and the batch contract.
#include "kernels/cuda/attention.h"

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

// ---- RoPE + KV write. A block per token, a warp per head row: q heads [0, nq), k heads [nq, nq + nkv), v heads
// after. Lane l rotates pairs i = l and l + 32 (head_dim 128) of the head, so a head's sum of squares for the
// q/k norm is one warp reduction.
constexpr int kRopeThreads = 128;

// Value `col` of token t's q | k | v row finished from the QKV matmul's partial sums as its Qkv epilogue finishes
// it: the splits added in order, the bias, one rounding to bf16 (returned as float: exact).
__device__ __forceinline__ float finish_qkv(const RopeKvParams& p, int t, int64_t n_cols, int64_t col) {
  const float* a = p.maybe_qkv_partials + int64_t(t) * n_cols + col;
  const int64_t slice = int64_t(p.batch.num_tokens) * n_cols;
  float s = a[0];
  for (int z = 1; z < p.qkv_splits; ++z) s = s + a[z * slice];
  if (p.maybe_qkv_bias) s = s + bf16_to_f32(p.maybe_qkv_bias[col]);
  return bf16_to_f32(f32_to_bf16(s));
}

__global__ void __launch_bounds__(kRopeThreads) rope_kv_kernel(const RopeKvParams p) {
  pdl_begin();
  const AttentionBatch& b = p.batch;
  const PagedKvCache& c = p.cache;
  const int t = blockIdx.x;
  int lo = 0, hi = b.num_seqs;  // the sequence s with cu_seqlens[s] <= t < cu_seqlens[s + 1]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (b.cu_seqlens[mid] <= t) lo = mid;
    else hi = mid;
  }
  const int s = lo, pos = b.positions[t];
  const int idx = pos >= 0 ? pos / c.block_size : -1;
  const int block = idx >= 0 && idx < b.max_blocks_per_seq ? b.block_table[int64_t(s) * b.max_blocks_per_seq + idx] : -1;
  const bool store = block >= 0 && block < c.num_blocks;  // a bad plan's token writes nowhere
  const int slot = pos >= 0 ? pos % c.block_size : 0;
  const int hd = c.head_dim, half = hd / 2, nq = p.num_qo_heads, nkv = c.num_kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool partials = p.maybe_qkv_partials != nullptr;
  const int64_t n_cols = int64_t(nq + 2 * nkv) * hd;  // of a partials row

  for (int r = warp; r < nq + 2 * nkv; r += kRopeThreads / 32) {
    if (r >= nq + nkv) {  // v: copied as is
      if (!store) continue;
      const int h = r - nq - nkv;
      bf16_bits* dst = c.v + c.offset(block, slot, h);
      if (partials) {
        for (int i = lane; i < hd; i += 32) dst[i] = f32_to_bf16(finish_qkv(p, t, n_cols, int64_t(r) * hd + i));
        continue;
      }
      const bf16_bits* src = p.v + int64_t(t) * p.ld_v + int64_t(h) * hd;
      for (int i = lane; i < hd; i += 32) dst[i] = src[i];
      continue;
    }
    const bool is_q = r < nq;
    if (!is_q && !store) continue;
    const int h = is_q ? r : r - nq;
    const bf16_bits* src = partials ? nullptr
                           : is_q   ? p.q + int64_t(t) * p.ld_q + int64_t(h) * hd
                                    : p.k + int64_t(t) * p.ld_k + int64_t(h) * hd;
    bf16_bits* dst = is_q ? p.q + int64_t(t) * p.ld_q + int64_t(h) * hd : c.k + c.offset(block, slot, h);
    const bf16_bits* norm = is_q ? p.maybe_q_norm : p.maybe_k_norm;
    float x0[2] = {0.0f, 0.0f}, x1[2] = {0.0f, 0.0f};
    int ia[2] = {0, 0}, ib[2] = {0, 0};
    const int pairs = half / 32;  // 1 (head_dim 64) or 2 (128)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      if (j >= pairs) break;
      const int i = lane + 32 * j;
      ia[j] = p.style == RopeStyle::Halves ? i : 2 * i;
      ib[j] = p.style == RopeStyle::Halves ? i + half : 2 * i + 1;
      if (partials) {  // row r's columns: q heads, then k heads (r = nq + h), as the matmul's Qkv layout
        x0[j] = finish_qkv(p, t, n_cols, int64_t(r) * hd + ia[j]);
        x1[j] = finish_qkv(p, t, n_cols, int64_t(r) * hd + ib[j]);
      } else {
        x0[j] = bf16_to_f32(src[ia[j]]);
        x1[j] = bf16_to_f32(src[ib[j]]);
      }
    }
    if (norm) {
      float ss = 0.0f;
#pragma unroll
      for (int j = 0; j < 2; ++j) ss += x0[j] * x0[j] + x1[j] * x1[j];
#pragma unroll
      for (int off = 16; off > 0; off /= 2) ss += __shfl_xor_sync(0xFFFFFFFFu, ss, off);
      const float inv = 1.0f / sqrtf(ss / float(hd) + p.norm_eps);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        if (j >= pairs) break;
        x0[j] = x0[j] * inv * bf16_to_f32(norm[ia[j]]);
        x1[j] = x1[j] * inv * bf16_to_f32(norm[ib[j]]);
      }
    }
    __syncwarp();  // every lane has read its pairs before q is overwritten in place
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      if (j >= pairs) break;
      const float angle = float(pos) * p.inv_freq[lane + 32 * j];
      float sn, cs;
      sincosf(angle, &sn, &cs);
      dst[ia[j]] = f32_to_bf16(x0[j] * cs - x1[j] * sn);
      dst[ib[j]] = f32_to_bf16(x1[j] * cs + x0[j] * sn);
    }
  }
}

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

// ---- Launchers.

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

cudaError_t invalid(std::string* error, std::string why) {
  if (error) *error = std::move(why);
  return cudaErrorInvalidValue;
}

template <int kHeadDim>
cudaError_t launch_attention(const AttentionParams& p, int group, cudaStream_t stream) {
  const float scale_log2 = p.scale * kLog2e;
  const int max_splits = attention_max_splits(p.batch.max_kv_len);
  if (cudaError_t e = attn::launch_decode_attention(p, group, max_splits, scale_log2, stream); e != cudaSuccess)
    return e;
  if (p.batch.max_q_len > 1) {
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
    if (cudaError_t e = launch_kernel(prefill_kernel<kHeadDim>, grid, dim3(kPrefillWarps * 32), S::kSmemBytes, stream,
                                      p, group, scale_log2);
        e != cudaSuccess)
      return e;
  }
  return cudaSuccess;
}

}  // namespace

size_t attention_prefill_smem_bytes(int32_t head_dim) {
  return head_dim == 64 ? PrefillShape<64>::kSmemBytes : head_dim == 128 ? PrefillShape<128>::kSmemBytes : 0;
}

cudaError_t rope_write_kv(const RopeKvParams& p, cudaStream_t stream, std::string* error) {
  if (std::string why = rope_kv_params_error(p); !why.empty()) return invalid(error, std::move(why));
  return launch_kernel(rope_kv_kernel, dim3(unsigned(p.batch.num_tokens)), dim3(kRopeThreads), 0, stream, p);
}

cudaError_t paged_attention(const AttentionParams& p, cudaStream_t stream, std::string* error) {
  if (std::string why = attention_params_error(p); !why.empty()) return invalid(error, std::move(why));
  if (!aligned16(p.q) || !aligned16(p.out) || !aligned16(p.cache.k) || !aligned16(p.cache.v) ||
      (p.workspace && !aligned16(p.workspace)))
    return invalid(error, "attention: q, out, the cache's k and v and the workspace must be 16-byte aligned");
  if (p.batch.num_seqs > 65535)
    return invalid(error, "attention: at most 65535 sequences per call (got " + std::to_string(p.batch.num_seqs) + ")");
  const int group = p.num_qo_heads / p.cache.num_kv_heads;
  return p.cache.head_dim == 64 ? launch_attention<64>(p, group, stream) : launch_attention<128>(p, group, stream);
}

}  // namespace flint::cuda
