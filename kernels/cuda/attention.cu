// The attention entry points and the RoPE + KV write kernel; decode (split over keys and merged) is in
// attention_decode.cu, prefill (flash-attention-2 on the tensor cores) in attention_prefill.cu. See attention.h for the design and kernels/attention_params.h for the
// layout and the batch contract.
#include "kernels/cuda/attention.h"

#include <cuda_bf16.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/l2_budget.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/matmul.h"

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

// ---- Launchers.

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

cudaError_t invalid(std::string* error, std::string why) {
  if (error) *error = std::move(why);
  return cudaErrorInvalidValue;
}

// The kernel choice: -1 until the first use reads FLINT_ATTN_DECODE and FLINT_ATTN_PREFILL, else bit 0 the mma
// decode kernel, bit 1 the wgmma prefill kernel (as asked: whether the device can run it is checked at launch).
std::atomic<int>& kernel_choice() {
  static std::atomic<int> choice{-1};
  return choice;
}

AttentionKernels kernels_from(int bits) { return {(bits & 1) != 0, (bits & 2) != 0}; }

// FLINT_ATTN_AHEAD (read once): the l2_ahead_bytes the launcher gives a call that left it 0. Unset, "off" or "0":
// none; "on": half the L2 of the device current at the first call; N: N MiB (1..4096).
const EnvL2Budget& ahead_choice() {
  static const EnvL2Budget choice = env_l2_budget("FLINT_ATTN_AHEAD");
  return choice;
}

cudaError_t launch_attention(const AttentionParams& p, int group, cudaStream_t stream) {
  const AttentionKernels k = attention_kernels();
  const float scale_log2 = p.scale * kLog2e;
  const int max_splits = attention_max_splits(p.batch.max_kv_len);
  AttentionParams d = p;
  if (d.l2_ahead_bytes == 0) d.l2_ahead_bytes = ahead_choice().bytes;
  if (cudaError_t e = attn::launch_decode_attention(d, group, max_splits, scale_log2, k.decode_mma, stream);
      e != cudaSuccess)
    return e;
  if (attention_has_prefill(p.batch))
    return attn::launch_prefill_attention(p, group, scale_log2, k.prefill_wgmma && attention_prefill_wgmma_available(),
                                          stream);
  return cudaSuccess;
}

}  // namespace

AttentionKernels attention_kernels() {
  int bits = kernel_choice().load(std::memory_order_relaxed);
  if (bits < 0) {
    auto is = [](const char* name, const char* value) {
      const char* v = std::getenv(name);
      return v && std::strcmp(v, value) == 0;
    };
    int expected = -1;
    kernel_choice().compare_exchange_strong(expected, (is("FLINT_ATTN_DECODE", "mma") ? 1 : 0) |
                                                          (is("FLINT_ATTN_PREFILL", "wgmma") ? 2 : 0));
    bits = kernel_choice().load(std::memory_order_relaxed);
  }
  return kernels_from(bits);
}

void set_attention_kernels(const AttentionKernels& k) {
  kernel_choice().store((k.decode_mma ? 1 : 0) | (k.prefill_wgmma ? 2 : 0), std::memory_order_relaxed);
}

bool attention_prefill_wgmma_available() { return matmul_wgmma_available(); }

cudaError_t rope_write_kv(const RopeKvParams& p, cudaStream_t stream, std::string* error) {
  if (std::string why = rope_kv_params_error(p); !why.empty()) return invalid(error, std::move(why));
  return launch_kernel(rope_kv_kernel, dim3(unsigned(p.batch.num_tokens)), dim3(kRopeThreads), 0, stream, p);
}

cudaError_t paged_attention(const AttentionParams& p, cudaStream_t stream, std::string* error) {
  if (std::string why = attention_params_error(p); !why.empty()) return invalid(error, std::move(why));
  if (!aligned16(p.q) || !aligned16(p.out) || !aligned16(p.cache.k) || !aligned16(p.cache.v) ||
      (p.workspace && !aligned16(p.workspace)))
    return invalid(error, "attention: q, out, the cache's k and v and the workspace must be 16-byte aligned");
  if (!ahead_choice().valid)
    return invalid(error, ahead_choice().why("FLINT_ATTN_AHEAD"));
  if (p.l2_ahead_bytes < 0) return invalid(error, "attention: l2_ahead_bytes is " + std::to_string(p.l2_ahead_bytes));
  if (p.batch.num_seqs > 65535)
    return invalid(error, "attention: at most 65535 sequences per call (got " + std::to_string(p.batch.num_seqs) + ")");
  const size_t counters = attention_split_counters(p.batch.num_seqs, p.num_qo_heads, p.batch.max_kv_len);
  if (counters && (!p.split_counters || p.num_split_counters < counters))
    return invalid(error, "attention: max_kv_len " + std::to_string(p.batch.max_kv_len) + " needs " +
                              std::to_string(counters) + " split counters (zeroed once), got " +
                              std::to_string(p.split_counters ? p.num_split_counters : 0));
  const int group = p.num_qo_heads / p.cache.num_kv_heads;
  return launch_attention(p, group, stream);
}

}  // namespace flint::cuda
