// Embedding, the residual add fused with RMSNorm, and the gather of the rows that sample (kernels/cuda/ops.h);
// the CPU twins are kernels/cpu/ops_bf16.cpp. Every float operation is an explicit __f*_rn intrinsic, so nvcc
// fuses nothing the twin does not, and the GPU tests can ask for equal bits.
#include "kernels/cuda/ops.h"

#include <cuda_runtime.h>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops_common.cuh"

namespace flint::cuda {
namespace {

using namespace ops_detail;

// ---- embedding: one block of 128 threads per token ----------------------------------------------------------

constexpr int kEmbeddingThreads = 128;

template <bool kVec, ActType kOut>
__global__ void __launch_bounds__(kEmbeddingThreads) embedding_kernel(EmbeddingParams p) {
  pdl_begin();
  const int t = blockIdx.x;
  const int32_t id = p.ids[t];
  const bool valid = id >= 0 && id < p.vocab;  // a bad id reads nothing and writes zeros
  const uint16_t* src = p.table + int64_t(valid ? id : 0) * p.ld_table;
  if constexpr (kVec) {
    for (int c = threadIdx.x; c < p.hidden / 8; c += kEmbeddingThreads) {
      const uint4 v = valid ? reinterpret_cast<const uint4*>(src)[c] : make_uint4(0, 0, 0, 0);
      if constexpr (kOut == ActType::BF16) {
        reinterpret_cast<uint4*>(static_cast<uint16_t*>(p.out) + int64_t(t) * p.ld_out)[c] = v;
      } else {
        float4* o = reinterpret_cast<float4*>(static_cast<float*>(p.out) + int64_t(t) * p.ld_out) + 2 * c;
        o[0] = make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xFFFF0000u),
                           __uint_as_float(v.y << 16), __uint_as_float(v.y & 0xFFFF0000u));
        o[1] = make_float4(__uint_as_float(v.z << 16), __uint_as_float(v.z & 0xFFFF0000u),
                           __uint_as_float(v.w << 16), __uint_as_float(v.w & 0xFFFF0000u));
      }
    }
  } else {
    for (int i = threadIdx.x; i < p.hidden; i += kEmbeddingThreads) {
      const uint16_t v = valid ? src[i] : uint16_t(0);
      if constexpr (kOut == ActType::BF16)
        static_cast<uint16_t*>(p.out)[int64_t(t) * p.ld_out + i] = v;
      else
        static_cast<float*>(p.out)[int64_t(t) * p.ld_out + i] = bf16_to_f32(v);
    }
  }
}

// ---- add + RMSNorm: one block of 256 threads per row ----------------------------------------------------------

constexpr int kNormThreads = 256;  // the twin (kernels/cpu/ops_bf16.cpp) sums in this block's order

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off /= 2) v = __fadd_rn(v, __shfl_down_sync(0xFFFFFFFFu, v, off));
  return v;
}

// Values 8c .. 8c+7 of a row into v (n of them valid; the rest 0).
template <bool kVec>
__device__ __forceinline__ void load8_f32(const float* row, int c, int n, float v[8]) {
  if constexpr (kVec) {
    const float4 a = reinterpret_cast<const float4*>(row)[2 * c], b = reinterpret_cast<const float4*>(row)[2 * c + 1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    for (int i = 0; i < 8; ++i) v[i] = i < n ? row[8 * c + i] : 0.0f;
  }
}
template <bool kVec>
__device__ __forceinline__ void load8_bf16(const uint16_t* row, int c, int n, float v[8]) {
  if constexpr (kVec) {
    const uint4 a = reinterpret_cast<const uint4*>(row)[c];
    const uint32_t w[4] = {a.x, a.y, a.z, a.w};
    for (int i = 0; i < 4; ++i) v[2 * i] = __uint_as_float(w[i] << 16), v[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
  } else {
    for (int i = 0; i < 8; ++i) v[i] = i < n ? bf16_to_f32(row[8 * c + i]) : 0.0f;
  }
}

template <bool kVec>
__global__ void __launch_bounds__(kNormThreads) add_rmsnorm_kernel(AddRmsNormParams p) {
  pdl_begin();
  const int r = blockIdx.x;
  const int src = p.maybe_row_ids ? p.maybe_row_ids[r] : r;  // the x and delta row (the gather, with row ids)
  uint16_t* out = p.out + int64_t(r) * p.ld_out;
  const int num_chunks = (p.hidden + 7) / 8;
  if (p.maybe_row_ids && (src < 0 || src >= p.num_src_rows)) {  // a bad index: a row of zeros
    for (int i = threadIdx.x; i < p.hidden; i += kNormThreads) out[i] = 0;
    return;
  }
  float* x = p.x + int64_t(src) * p.ldx;
  const float* delta = p.maybe_delta ? p.maybe_delta + int64_t(src) * p.ld_delta : nullptr;
  // x + delta for chunk c of the row: the splits in the matmul reduction's order (split 0, += 1, += 2, ...).
  auto load_sum = [&](int c, int n, float (&v)[8]) {
    load8_f32<kVec>(x, c, n, v);
    if (!delta) return;
    float d[8], e[8];
    load8_f32<kVec>(delta, c, n, d);
    for (int s = 1; s < p.delta_splits; ++s) {
      load8_f32<kVec>(delta + s * p.ld_split, c, n, e);
      for (int i = 0; i < 8; ++i) d[i] = __fadd_rn(d[i], e[i]);
    }
    for (int i = 0; i < 8; ++i) v[i] = __fadd_rn(v[i], d[i]);
  };
  // Pass 1: x += delta (written back, unless the rows are gathered), Σ x² per thread over its chunks in increasing
  // order.
  float acc = 0.0f;
  for (int c = threadIdx.x; c < num_chunks; c += kNormThreads) {
    const int n = min(8, p.hidden - 8 * c);
    float v[8];
    load_sum(c, n, v);
    if (delta && !p.maybe_row_ids) {
      if constexpr (kVec) {
        reinterpret_cast<float4*>(x)[2 * c] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4*>(x)[2 * c + 1] = make_float4(v[4], v[5], v[6], v[7]);
      } else {
        for (int i = 0; i < n; ++i) x[8 * c + i] = v[i];
      }
    }
    for (int i = 0; i < n; ++i) acc = __fadd_rn(acc, __fmul_rn(v[i], v[i]));
  }
  // Block sum: each warp's tree, then warp 0 over the 8 warp sums (lanes 8..31 zero).
  __shared__ float warp_sums[kNormThreads / 32];
  __shared__ float inv_rms;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  acc = warp_sum(acc);
  if (lane == 0) warp_sums[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    const float ss = warp_sum(lane < kNormThreads / 32 ? warp_sums[lane] : 0.0f);
    if (lane == 0) inv_rms = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, float(p.hidden)), p.eps)));
  }
  __syncthreads();
  const float inv = inv_rms;
  // Pass 2: out = bf16(x · inv · w), x re-read (this thread's own chunks, just written or read; gathered rows add
  // their delta again, the same additions).
  for (int c = threadIdx.x; c < num_chunks; c += kNormThreads) {
    const int n = min(8, p.hidden - 8 * c);
    float v[8], w[8];
    if (p.maybe_row_ids) load_sum(c, n, v);
    else load8_f32<kVec>(x, c, n, v);
    load8_bf16<kVec>(p.w, c, n, w);
    uint16_t o[8];
    for (int i = 0; i < 8; ++i) o[i] = f32_to_bf16(__fmul_rn(__fmul_rn(v[i], inv), w[i]));
    if constexpr (kVec) {
      reinterpret_cast<uint4*>(out)[c] = make_uint4(o[0] | uint32_t(o[1]) << 16, o[2] | uint32_t(o[3]) << 16,
                                                    o[4] | uint32_t(o[5]) << 16, o[6] | uint32_t(o[7]) << 16);
    } else {
      for (int i = 0; i < n; ++i) out[8 * c + i] = o[i];
    }
  }
}

// ---- hold_stream: one thread spinning on a host flag -------------------------------------------------------

#ifndef FLINT_CUDA_EMU
__global__ void __launch_bounds__(1) hold_kernel(const volatile int32_t* flag) {
  pdl_begin();
  for (int i = 0; i < 1000000 && *flag == 0; ++i) __nanosleep(2000);  // ~2 s at most
}
#endif

}  // namespace

cudaError_t hold_stream(const int32_t* flag, cudaStream_t stream) {
#ifdef FLINT_CUDA_EMU
  (void)flag, (void)stream;
  return cudaSuccess;
#else
  return launch_kernel(hold_kernel, dim3(1), dim3(1), 0, stream, flag);
#endif
}

cudaError_t embedding(const EmbeddingParams& p, cudaStream_t stream, std::string* error) {
  if (std::string e = embedding_params_error(p); !e.empty()) return invalid(std::move(e), error);
  if (p.num_tokens == 0) return cudaSuccess;
  const int out_align = p.out_type == ActType::F32 ? 4 : 8;  // ld_out in elements for 16-byte rows
  const bool vec = p.hidden % 8 == 0 && p.ld_table % 8 == 0 && p.ld_out % out_align == 0 && aligned16(p.table) &&
                   aligned16(p.out);
  const dim3 grid(unsigned(p.num_tokens));
  const dim3 block(kEmbeddingThreads);
  if (p.out_type == ActType::F32)
    return vec ? launch_kernel(embedding_kernel<true, ActType::F32>, grid, block, 0, stream, p)
               : launch_kernel(embedding_kernel<false, ActType::F32>, grid, block, 0, stream, p);
  return vec ? launch_kernel(embedding_kernel<true, ActType::BF16>, grid, block, 0, stream, p)
             : launch_kernel(embedding_kernel<false, ActType::BF16>, grid, block, 0, stream, p);
}

cudaError_t add_rmsnorm(const AddRmsNormParams& p, cudaStream_t stream, std::string* error) {
  if (std::string e = add_rmsnorm_params_error(p); !e.empty()) return invalid(std::move(e), error);
  if (p.num_rows == 0) return cudaSuccess;
  const bool delta_vec =
      !p.maybe_delta || (p.ld_delta % 4 == 0 && (p.delta_splits == 1 || p.ld_split % 4 == 0) && aligned16(p.maybe_delta));
  const bool vec = p.hidden % 8 == 0 && p.ldx % 4 == 0 && p.ld_out % 8 == 0 && aligned16(p.x) && aligned16(p.w) &&
                   aligned16(p.out) && delta_vec;
  const dim3 grid(unsigned(p.num_rows)), block(kNormThreads);
  return vec ? launch_kernel(add_rmsnorm_kernel<true>, grid, block, 0, stream, p)
             : launch_kernel(add_rmsnorm_kernel<false>, grid, block, 0, stream, p);
}

}  // namespace flint::cuda
