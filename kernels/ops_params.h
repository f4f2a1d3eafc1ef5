// The parameter structs of the small GPU ops (embedding, fused residual add + RMSNorm, row gather, dequantisation),
// read by the CUDA launchers (kernels/cuda/ops.h) and by their CPU twins (kernels/cpu/ops_bf16.h), so both compute
// from the same struct. No CUDA types here. Pointers are device pointers for the kernels, host pointers for the twins.
//
// The residual stream is fp32 (as in the CPU backend): a bf16 residual would round every layer's sum to 8 bits of
// mantissa and drift from the CPU backend over 30+ layers; fp32 costs 2 more bytes per value read and written per
// norm, small next to the weights. Only what a matmul reads (the norm's output) is bf16.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/dtype.h"
#include "kernels/matmul_params.h"  // bf16_bits, FLINT_HOST_DEVICE

namespace flint {

enum class ActType : uint8_t { BF16, F32 };  // element type of an activation buffer

// out[t, :] = table[ids[t], :] for t < num_tokens, converted to out_type (bf16 -> fp32 is exact).
// An id outside [0, vocab) writes a row of zeros (a defined value, never a read out of bounds); the host validates
// ids before (the tokenizer and the request checks), so this only keeps a bad id from reading past the table.
struct EmbeddingParams {
  int num_tokens = 0;
  const int32_t* ids = nullptr;      // (num_tokens)
  int vocab = 0, hidden = 0;
  const bf16_bits* table = nullptr;  // (vocab, hidden), rows ld_table elements apart
  int64_t ld_table = 0;
  ActType out_type = ActType::F32;   // F32: straight into the residual stream
  void* out = nullptr;               // (num_tokens, hidden), rows ld_out elements apart
  int64_t ld_out = 0;
};

// The residual add fused with RMSNorm, per row r < num_rows (fp32 throughout, one rounding to bf16 at the end):
//   if maybe_delta: x[r, :] += delta[r, :]                 (x written back; the residual stream)
//                   delta = split 0 + split 1 + ... in that order when delta_splits > 1 (a matmul's partial sums
//                   left in its workspace: MatmulParams::leave_partials), exactly as its reduction adds them
//   out[r, :] = bf16( x[r, i] * inv_rms * float(w[i]) )      inv_rms = 1 / sqrt(Σ_i x[r, i]² / hidden + eps)
// with x · inv_rms · w evaluated left to right, as kernels/cpu/ops.cpp rms_norm does. maybe_delta null: plain
// RMSNorm, x only read (the first layer, whose x is the embedding).
// maybe_row_ids (the final norm, on the rows that sample): out row r is the norm of x and delta row row_ids[r] of
// num_src_rows (x + delta summed as above, the same bits, but not written back: x is only read), zeros for an index
// outside [0, num_src_rows); the gather before the norm, in the same launch.
struct AddRmsNormParams {
  int num_rows = 0, hidden = 0;
  float* x = nullptr;                      // (num_rows, hidden) fp32, rows ldx apart; written only with a delta
  int64_t ldx = 0;                         // and no row ids ((num_src_rows, hidden) with row ids)
  const int32_t* maybe_row_ids = nullptr;  // (num_rows): the x and delta row each out row reads, or null (row r)
  int num_src_rows = 0;                    // x's and delta's rows, with row ids
  const float* maybe_delta = nullptr;      // (num_rows, hidden) fp32, rows ld_delta apart, or null (a matmul's
                                           // fp32 output: the residual adds what the matmul summed, unrounded)
  int64_t ld_delta = 0;
  int delta_splits = 1;                    // delta is the sum of this many slices, slice s at maybe_delta + s · ld_split
  int64_t ld_split = 0;
  const bf16_bits* w = nullptr;            // (hidden) the norm's weight, bf16
  bf16_bits* out = nullptr;                // (num_rows, hidden) bf16, rows ld_out apart; may not alias x or delta
  int64_t ld_out = 0;
  float eps = 1e-6f;                       // from the model's config (rms_norm_eps)
};

// A GGUF weight (num_rows, row_elems) of type `type`, rows src_row_bytes apart, into bf16:
//   dst[r, :] = f32_to_bf16(dequantize_row(type, src + r * src_row_bytes)) exactly, bit for bit: the kernel does
// the same fp32 operations as kernels/cpu/quant*.cpp's scalar dequantisation (each product and sum rounded once,
// no fused multiply-add) and rounds to nearest even, NaN kept quiet, as f32_to_bf16 does.
// PRECOND: src 2-byte aligned (4-byte for F32) and src_row_bytes a multiple of that: GGUF tensor data always is.
struct DequantParams {
  DType type = DType::BF16;
  int64_t num_rows = 0, row_elems = 0;  // row_elems a multiple of the type's block size
  const void* src = nullptr;
  uint64_t src_row_bytes = 0;           // >= dtype_bytes(type, row_elems)
  bf16_bits* dst = nullptr;             // (num_rows, row_elems), rows ld_dst elements apart
  int64_t ld_dst = 0;
};

// Empty when p describes a valid call; else what is wrong, naming the field. Shapes, strides and null pointers
// only (not what device memory holds).
namespace detail {
inline std::string field(const char* op, const char* name, long long v, const char* want) {
  return std::string(op) + ": " + name + " = " + std::to_string(v) + " " + want;
}
}  // namespace detail

inline std::string embedding_params_error(const EmbeddingParams& p) {
  using detail::field;
  if (p.num_tokens < 0) return field("embedding", "num_tokens", p.num_tokens, "must be >= 0");
  if (p.vocab < 1) return field("embedding", "vocab", p.vocab, "must be >= 1");
  if (p.hidden < 1) return field("embedding", "hidden", p.hidden, "must be >= 1");
  if (p.ld_table < p.hidden) return field("embedding", "ld_table", p.ld_table, "is less than hidden");
  if (p.ld_out < p.hidden) return field("embedding", "ld_out", p.ld_out, "is less than hidden");
  if (p.out_type != ActType::BF16 && p.out_type != ActType::F32)
    return field("embedding", "out_type", int(p.out_type), "is unknown (supported: BF16, F32)");
  if (p.num_tokens > 0 && (!p.ids || !p.table || !p.out)) return "embedding: ids, table and out must not be null";
  return {};
}

inline std::string add_rmsnorm_params_error(const AddRmsNormParams& p) {
  using detail::field;
  if (p.num_rows < 0) return field("add_rmsnorm", "num_rows", p.num_rows, "must be >= 0");
  if (p.hidden < 1) return field("add_rmsnorm", "hidden", p.hidden, "must be >= 1");
  if (p.ldx < p.hidden) return field("add_rmsnorm", "ldx", p.ldx, "is less than hidden");
  if (p.maybe_delta && p.ld_delta < p.hidden) return field("add_rmsnorm", "ld_delta", p.ld_delta, "is less than hidden");
  if (p.delta_splits < 1) return field("add_rmsnorm", "delta_splits", p.delta_splits, "must be >= 1");
  if (p.maybe_row_ids && p.num_src_rows < 0) return field("add_rmsnorm", "num_src_rows", p.num_src_rows, "must be >= 0");
  const int src_rows = p.maybe_row_ids ? p.num_src_rows : p.num_rows;  // the rows of x and of each delta slice
  if (p.maybe_delta && p.delta_splits > 1 && src_rows > 0 && p.ld_split < (src_rows - 1) * p.ld_delta + p.hidden)
    return field("add_rmsnorm", "ld_split", p.ld_split, "is less than one slice of its rows");
  if (p.ld_out < p.hidden) return field("add_rmsnorm", "ld_out", p.ld_out, "is less than hidden");
  if (!(p.eps > 0.0f) || !(p.eps < 1.0f)) return "add_rmsnorm: eps = " + std::to_string(p.eps) + " must be in (0, 1)";
  if (p.num_rows > 0 && (!p.x || !p.w || !p.out)) return "add_rmsnorm: x, w and out must not be null";
  return {};
}

inline std::string dequant_params_error(const DequantParams& p) {
  using detail::field;
  switch (p.type) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0: case DType::Q4_1:
    case DType::Q4_K: case DType::Q6_K: break;
    default: return field("dequant", "type", int(p.type), "is unknown (supported: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q6_K)");
  }
  if (p.num_rows < 0) return field("dequant", "num_rows", p.num_rows, "must be >= 0");
  if (p.row_elems < 1) return field("dequant", "row_elems", p.row_elems, "must be >= 1");
  const auto need = dtype_bytes(p.type, uint64_t(p.row_elems));
  if (!need)
    return "dequant: row_elems = " + std::to_string(p.row_elems) + " is not a multiple of " +
           std::string(dtype_info(p.type).name) + "'s block of " + std::to_string(dtype_info(p.type).block_size);
  if (p.src_row_bytes < *need)
    return "dequant: src_row_bytes = " + std::to_string(p.src_row_bytes) + " is less than the " +
           std::to_string(*need) + " bytes a row of " + std::to_string(p.row_elems) + " " +
           std::string(dtype_info(p.type).name) + " values takes";
  const uint64_t align = p.type == DType::F32 ? 4 : 2;
  if (p.src_row_bytes % align != 0)
    return "dequant: src_row_bytes = " + std::to_string(p.src_row_bytes) + " must be a multiple of " + std::to_string(align);
  if (p.ld_dst < p.row_elems) return field("dequant", "ld_dst", p.ld_dst, "is less than row_elems");
  if (p.num_rows > 0 && (!p.src || !p.dst)) return "dequant: src and dst must not be null";
  if (p.num_rows > 0 && reinterpret_cast<uintptr_t>(p.src) % align != 0)
    return "dequant: src must be " + std::to_string(align) + "-byte aligned";
  return {};
}

}  // namespace flint
