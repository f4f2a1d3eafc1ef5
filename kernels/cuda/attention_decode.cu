// The decode attention kernel (one query token per sequence), its split merge and launcher. A sequence's keys are
// cut into splits by attention_keys_per_split, so its output depends only on its own keys. See attention.h for the
// design and kernels/attention_params.h for the layout and the batch contract.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

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

// ---- Decode: a block (4 warps) per (sequence, KV head, head chunk, split). Lanes split head_dim into 16-byte
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

template <int kHeadDim, int kHeads>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    decode_kernel(const AttentionParams p, int group, int head_chunks, int max_splits, float scale_log2) {
  pdl_begin();
  using S = DecodeShape<kHeadDim, kHeads>;
  const AttentionBatch& b = p.batch;
  const PagedKvCache& c = p.cache;
  const int s = blockIdx.x;
  const int kv_head = blockIdx.y / head_chunks, chunk = blockIdx.y % head_chunks;
  const int split = blockIdx.z;
  const int t = b.cu_seqlens[s];
  if (b.cu_seqlens[s + 1] - t != 1) return;  // prefill's sequence
  const int n_keys = visible_keys(b, s, t);
  const int n_splits = attention_num_splits(n_keys);
  if (n_keys < 1 || split >= n_splits) return;
  const int per_split = attention_keys_per_split(n_keys);
  const int k_begin = split * per_split, k_end = min(k_begin + per_split, n_keys);
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
  for (int idx = threadIdx.x; idx < heads * kHeadDim; idx += kDecodeWarps * 32) {
    const int g = idx / kHeadDim, d = idx % kHeadDim;
    float mx = sm_m[0][g];
#pragma unroll
    for (int w = 1; w < kDecodeWarps; ++w) mx = fmaxf(mx, sm_m[w][g]);
    float sum = 0.0f, o = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) {
      const float wt = exp2f(sm_m[w][g] - mx);  // 0 for a warp that saw no key
      sum += sm_l[w][g] * wt;
      o += sm_acc[w][g][d] * wt;
    }
    const int h = h0 + g;
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
}

// Adds a decode sequence's splits in split order: out = Σ o_i 2^(m_i - M) / Σ l_i 2^(m_i - M). A block per
// (sequence, query head), a thread per value.
template <int kHeadDim>
__global__ void __launch_bounds__(kHeadDim) merge_splits_kernel(const AttentionParams p, int max_splits) {
  pdl_begin();
  const AttentionBatch& b = p.batch;
  const int s = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
  const int t = b.cu_seqlens[s];
  if (b.cu_seqlens[s + 1] - t != 1) return;
  const int n_keys = visible_keys(b, s, t);
  const int n = attention_num_splits(n_keys);
  if (n_keys < 1 || n <= 1) return;
  const float* ws = static_cast<const float*>(p.workspace) + (int64_t(s) * p.num_qo_heads + h) * max_splits * (kHeadDim + 2);
  float mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = fmaxf(mx, ws[i * (kHeadDim + 2) + kHeadDim]);
  float sum = 0.0f, o = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float* part = ws + i * (kHeadDim + 2);
    const float wt = exp2f(part[kHeadDim] - mx);
    sum += part[kHeadDim + 1] * wt;
    o += part[d] * wt;
  }
  p.out[int64_t(t) * p.ld_out + int64_t(h) * kHeadDim + d] = f32_to_bf16(o / sum);
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
cudaError_t launch_decode(const AttentionParams& p, int group, int max_splits, float scale_log2, cudaStream_t stream) {
  const cudaError_t e = launch_decode_simt_heads<kHeadDim>(p, group, max_splits, scale_log2, stream);
  if (e != cudaSuccess || max_splits <= 1) return e;
  const dim3 grid(unsigned(p.batch.num_seqs), unsigned(p.num_qo_heads));
  return launch_kernel(merge_splits_kernel<kHeadDim>, grid, dim3(kHeadDim), 0, stream, p, max_splits);
}

}  // namespace

cudaError_t attn::launch_decode_attention(const AttentionParams& p, int group, int max_splits, float scale_log2,
                                          cudaStream_t stream) {
  return p.cache.head_dim == 64 ? launch_decode<64>(p, group, max_splits, scale_log2, stream)
                                : launch_decode<128>(p, group, max_splits, scale_log2, stream);
}

}  // namespace flint::cuda
