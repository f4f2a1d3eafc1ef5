// GGUF weights to bf16 on the device at load (kernels/cuda/ops.h dequantize): the same fp32 operations as the
// scalar dequantisation of kernels/cpu/quant.cpp and quant_k.cpp (each product and sum rounded once, explicit
// __f*_rn intrinsics so nvcc fuses nothing), then the same rounding to bf16, so the result equals
// f32_to_bf16(dequantize_row(...)) bit for bit. (The CPU's AVX2 paths give the same floats as its scalar ones: the
// same operations, and every product of a scale and a quant is exact, so a fused multiply-add changes nothing.)
#include <cuda_runtime.h>

#include "kernels/cpu/quant.h"  // the block layouts (plain structs)
#include "kernels/cuda/ops.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops_common.cuh"

namespace flint::cuda {
namespace {

using namespace ops_detail;

constexpr int kDequantThreads = 256;

// Writes n (8 or 32) consecutive bf16 values; 16-byte stores when dst is 16-byte aligned.
template <int N>
__device__ __forceinline__ void store_bf16(uint16_t* dst, const uint16_t (&v)[N]) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
    for (int i = 0; i < N; i += 8)
      reinterpret_cast<uint4*>(dst + i)[0] =
          make_uint4(v[i] | uint32_t(v[i + 1]) << 16, v[i + 2] | uint32_t(v[i + 3]) << 16,
                     v[i + 4] | uint32_t(v[i + 5]) << 16, v[i + 6] | uint32_t(v[i + 7]) << 16);
  } else {
    for (int i = 0; i < N; ++i) dst[i] = v[i];
  }
}

// A unit is 32 values: one block of Q8_0/Q4_0/Q4_1, one sub-block of Q4_K, a quarter of a Q6_K half. The row's
// bytes are only 2-byte aligned (blocks of 18, 20, 34, 210 bytes), so fields are read as bytes and halves.
__device__ void dequant_unit(DType t, const uint8_t* row, int64_t unit, uint16_t (&y)[32]) {
  switch (t) {
    case DType::Q8_0: {
      const auto* b = reinterpret_cast<const cpu::BlockQ8_0*>(row) + unit;
      const float d = f16_to_f32(b->d);
      for (int i = 0; i < 32; ++i) y[i] = f32_to_bf16(__fmul_rn(d, float(b->qs[i])));
      return;
    }
    case DType::Q4_0: {
      const auto* b = reinterpret_cast<const cpu::BlockQ4_0*>(row) + unit;
      const float d = f16_to_f32(b->d), m = __fmul_rn(-8.0f, d);  // q·d + (-8d): +0, never -0, as the CPU's
      for (int j = 0; j < 16; ++j) {
        y[j] = f32_to_bf16(__fadd_rn(__fmul_rn(float(b->qs[j] & 0x0F), d), m));
        y[j + 16] = f32_to_bf16(__fadd_rn(__fmul_rn(float(b->qs[j] >> 4), d), m));
      }
      return;
    }
    case DType::Q4_1: {
      const auto* b = reinterpret_cast<const cpu::BlockQ4_1*>(row) + unit;
      const float d = f16_to_f32(b->d), m = f16_to_f32(b->m);
      for (int j = 0; j < 16; ++j) {
        y[j] = f32_to_bf16(__fadd_rn(__fmul_rn(d, float(b->qs[j] & 0x0F)), m));
        y[j + 16] = f32_to_bf16(__fadd_rn(__fmul_rn(d, float(b->qs[j] >> 4)), m));
      }
      return;
    }
    case DType::Q4_K: {  // unit = 8 · block + sub-block s; x = (d·sc)·q - dmin·mn
      const auto* b = reinterpret_cast<const cpu::BlockQ4_K*>(row) + unit / 8;
      const int s = int(unit % 8);
      uint32_t sc, mn;
      if (s < 4) {
        sc = b->scales[s] & 63, mn = b->scales[s + 4] & 63;
      } else {
        sc = (b->scales[s + 4] & 0x0F) | ((b->scales[s - 4] >> 6) << 4);
        mn = (b->scales[s + 4] >> 4) | ((b->scales[s] >> 6) << 4);
      }
      const float dsc = __fmul_rn(f16_to_f32(b->d), float(sc)), dmn = __fmul_rn(f16_to_f32(b->dmin), float(mn));
      const uint8_t* q = b->qs + 32 * (s / 2);
      const int shift = (s % 2) * 4;  // sub-block 2c: low nibbles of chunk c; 2c + 1: high nibbles
      for (int l = 0; l < 32; ++l) y[l] = f32_to_bf16(__fsub_rn(__fmul_rn(dsc, float((q[l] >> shift) & 0x0F)), dmn));
      return;
    }
    case DType::Q6_K: {  // unit = 8 · block + 4 · half h + quarter k: values 128h + 32k + l, l < 32
      const auto* b = reinterpret_cast<const cpu::BlockQ6_K*>(row) + unit / 8;
      const int h = int(unit % 8) / 4, k = int(unit % 4);
      const uint8_t* L = b->ql + 64 * h + (k % 2) * 32;  // quarters 1 and 3 take ql[l + 32]
      const uint8_t* H = b->qh + 32 * h;
      const float d = f16_to_f32(b->d);
      for (int l = 0; l < 32; ++l) {
        const int low = k < 2 ? (L[l] & 0x0F) : (L[l] >> 4);
        const int q = (low | (((H[l] >> (2 * k)) & 3) << 4)) - 32;
        const float ds = __fmul_rn(d, float(b->scales[8 * h + l / 16 + 2 * k]));
        y[l] = f32_to_bf16(__fmul_rn(ds, float(q)));
      }
      return;
    }
    default:  // not a block type (the launcher sends only block types here): NaN, never unwritten values
      for (int i = 0; i < 32; ++i) y[i] = 0x7FC0;
      return;
  }
}

// Block types: one thread per 32-value unit, grid-stride over all rows' units.
__global__ void __launch_bounds__(kDequantThreads) dequant_blocks_kernel(DequantParams p, int64_t units_per_row) {
  pdl_begin();
  const int64_t total = p.num_rows * units_per_row;
  for (int64_t g = blockIdx.x * int64_t(kDequantThreads) + threadIdx.x; g < total; g += int64_t(gridDim.x) * kDequantThreads) {
    const int64_t r = g / units_per_row, unit = g % units_per_row;
    uint16_t y[32];
    dequant_unit(p.type, static_cast<const uint8_t*>(p.src) + uint64_t(r) * p.src_row_bytes, unit, y);
    store_bf16(p.dst + r * p.ld_dst + unit * 32, y);
  }
}

// Plain types: one thread per value.
__global__ void __launch_bounds__(kDequantThreads) dequant_plain_kernel(DequantParams p) {
  pdl_begin();
  const int64_t total = p.num_rows * p.row_elems;
  for (int64_t g = blockIdx.x * int64_t(kDequantThreads) + threadIdx.x; g < total; g += int64_t(gridDim.x) * kDequantThreads) {
    const int64_t r = g / p.row_elems, i = g % p.row_elems;
    const uint8_t* row = static_cast<const uint8_t*>(p.src) + uint64_t(r) * p.src_row_bytes;
    uint16_t v;
    if (p.type == DType::F32) v = f32_to_bf16(reinterpret_cast<const float*>(row)[i]);
    else if (p.type == DType::F16) v = f32_to_bf16(f16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]));
    else v = reinterpret_cast<const uint16_t*>(row)[i];
    p.dst[r * p.ld_dst + i] = v;
  }
}

}  // namespace

cudaError_t dequantize(const DequantParams& p, cudaStream_t stream, std::string* error) {
  if (std::string e = dequant_params_error(p); !e.empty()) return invalid(std::move(e), error);
  if (p.num_rows == 0) return cudaSuccess;
  const bool plain = p.type == DType::F32 || p.type == DType::F16 || p.type == DType::BF16;
  const int64_t work = plain ? p.num_rows * p.row_elems : p.num_rows * (p.row_elems / 32);
  const int64_t blocks = std::min<int64_t>((work + kDequantThreads - 1) / kDequantThreads, 65536);
  if (plain) return launch_kernel(dequant_plain_kernel, dim3(unsigned(blocks)), dim3(kDequantThreads), 0, stream, p);
  return launch_kernel(dequant_blocks_kernel, dim3(unsigned(blocks)), dim3(kDequantThreads), 0, stream, p,
                       int64_t(p.row_elems / 32));
}

}  // namespace flint::cuda
