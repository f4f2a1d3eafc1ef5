// What every Flint matmul kernel shares (kernels/cuda/matmul_decode.cu, matmul_prefill.cu, matmul.cu): the one
// 32-value tensor-core step and its operand mapping, the loads, the epilogues and where a tile's sums go. Every
// kernel runs exactly this arithmetic per output, which is what keeps a row's bits independent of the kernel and of
// M (matmul.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_util.cuh"
#include "kernels/matmul_params.h"

namespace flint::cuda::mm {

using bf16 = __nv_bfloat16;

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

}  // namespace flint::cuda::mm
