// The CPU twins of kernels/cuda/ops.cu: the same fp32 operations per element, in the kernels' order where an order
// matters (the RMSNorm's sum of squares), so the GPU tests can ask for equal bits. Built with -ffp-contract=off
// (CMake): every product and sum rounds once, as the kernels' __f*_rn intrinsics do.
#include "kernels/cpu/ops_bf16.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/quant.h"

namespace flint::cpu {
namespace {

void check(const std::string& error) {
  if (!error.empty()) fail(error);
}

constexpr int kNormThreads = 256;  // the kernel's block: thread t sums chunks of 8 values t, t + 256, ...

// The kernel's warp reduction as lane 0 sees it: v[i] += v[i + off] for off = 16, 8, 4, 2, 1.
float warp_sum(float* v) {
  for (int off = 16; off > 0; off /= 2)
    for (int i = 0; i < off; ++i) v[i] = v[i] + v[i + off];
  return v[0];
}

}  // namespace

void embedding_bf16(const EmbeddingParams& p) {
  check(embedding_params_error(p));
  for (int t = 0; t < p.num_tokens; ++t) {
    const int32_t id = p.ids[t];
    const bool valid = id >= 0 && id < p.vocab;
    const bf16_bits* src = p.table + int64_t(valid ? id : 0) * p.ld_table;
    if (p.out_type == ActType::F32) {
      float* o = static_cast<float*>(p.out) + int64_t(t) * p.ld_out;
      for (int i = 0; i < p.hidden; ++i) o[i] = valid ? bf16_to_f32(src[i]) : 0.0f;
    } else {
      bf16_bits* o = static_cast<bf16_bits*>(p.out) + int64_t(t) * p.ld_out;
      for (int i = 0; i < p.hidden; ++i) o[i] = valid ? src[i] : bf16_bits(0);
    }
  }
}

void add_rmsnorm(const AddRmsNormParams& p) {
  check(add_rmsnorm_params_error(p));
  const int num_chunks = (p.hidden + 7) / 8;
  std::vector<float> gathered(p.maybe_row_ids ? size_t(p.hidden) : 0);
  for (int r = 0; r < p.num_rows; ++r) {
    const int32_t src = p.maybe_row_ids ? p.maybe_row_ids[r] : r;
    bf16_bits* o = p.out + int64_t(r) * p.ld_out;
    if (p.maybe_row_ids && (src < 0 || src >= p.num_src_rows)) {  // a bad index: a row of zeros
      std::fill_n(o, p.hidden, bf16_bits(0));
      continue;
    }
    // x: the row itself (written back), or with row ids a copy (x is only read then).
    float* x = p.x + int64_t(src) * p.ldx;
    if (p.maybe_row_ids) {
      std::copy_n(x, p.hidden, gathered.data());
      x = gathered.data();
    }
    if (p.maybe_delta) {
      const float* d = p.maybe_delta + int64_t(src) * p.ld_delta;
      for (int i = 0; i < p.hidden; ++i) {
        float sum = d[i];
        for (int s = 1; s < p.delta_splits; ++s) sum = sum + d[s * p.ld_split + i];
        x[i] = x[i] + sum;
      }
    }
    // Per thread: its chunks in increasing order, each value squared then added (two roundings).
    float partial[kNormThreads];
    for (int t = 0; t < kNormThreads; ++t) {
      float acc = 0.0f;
      for (int c = t; c < num_chunks; c += kNormThreads)
        for (int i = 8 * c; i < 8 * c + 8 && i < p.hidden; ++i) {
          const float sq = x[i] * x[i];
          acc = acc + sq;
        }
      partial[t] = acc;
    }
    // Each warp's sum, then warp 0 sums the 8 warp sums padded with zeros to 32 lanes.
    float warps[32] = {};
    for (int w = 0; w < kNormThreads / 32; ++w) warps[w] = warp_sum(partial + 32 * w);
    const float ss = warp_sum(warps);
    const float inv = 1.0f / std::sqrt(ss / float(p.hidden) + p.eps);
    for (int i = 0; i < p.hidden; ++i) o[i] = f32_to_bf16(x[i] * inv * bf16_to_f32(p.w[i]));
  }
}

void dequantize_bf16(const DequantParams& p) {
  check(dequant_params_error(p));
  std::vector<float> row(static_cast<size_t>(p.row_elems));
  for (int64_t r = 0; r < p.num_rows; ++r) {
    dequantize_row(p.type, static_cast<const uint8_t*>(p.src) + uint64_t(r) * p.src_row_bytes, row.data(), p.row_elems);
    bf16_bits* o = p.dst + r * p.ld_dst;
    for (int64_t i = 0; i < p.row_elems; ++i) o[i] = f32_to_bf16(row[size_t(i)]);
  }
}

}  // namespace flint::cpu
