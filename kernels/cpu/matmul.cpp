// Weight-only-quantized matmul on the CPU: W (N, K) in its file's dtype times
// fp32 activations. Each weight block is dequantized once into registers and
// multiplied into every activation row of a tile, so a row's arithmetic (and
// its bits) never depend on how many rows are in the call.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant.h"

#include "kernels/cpu/simd.h"

namespace flint::cpu {

namespace {

// Activation rows per tile: 4 accumulators each plus 4 weight registers fit
// in the 16 ymm registers for 3 rows.
constexpr int kTile = 3;

#ifdef FLINT_QUANT_AVX2

// Per (n, m): four 8-lane accumulators; value k of a 32-value group goes to
// accumulator (k / 8) % 4, lane k % 8; reduced by simd::hsum4.
// Dequantizes one 32-value group into w[0..3] (values 0-7, 8-15, 16-23, 24-31).
template <DType T>
inline void load_group(const uint8_t* row, int64_t g, __m256 w[4]) {
  if constexpr (T == DType::Q4_1 || T == DType::Q4_0) {
    using Block = std::conditional_t<T == DType::Q4_1, BlockQ4_1, BlockQ4_0>;
    const Block* b = reinterpret_cast<const Block*>(row) + g;
    __m256 d, m;
    if constexpr (T == DType::Q4_1) {
      // d and m are adjacent fp16 values: convert both with one instruction.
      uint32_t dm;
      std::memcpy(&dm, b, 4);
      const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(int(dm)));
      d = _mm256_broadcastss_ps(f);
      m = _mm256_broadcastss_ps(_mm_movehdup_ps(f));
    } else {
      d = _mm256_set1_ps(half_to_float(b->d));
      m = _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
    }
    // Widened bytes 0-7 hold values 0-7 (low nibbles) and 16-23 (high); bytes 8-15 hold 8-15 and 24-31.
    const __m256i v0 = simd::load_u8x8(b->qs), v1 = simd::load_u8x8(b->qs + 8);
    const __m256i low = _mm256_set1_epi32(0x0F);
    w[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v0, low)), d, m);
    w[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v1, low)), d, m);
    w[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4)), d, m);
    w[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4)), d, m);
  } else if constexpr (T == DType::Q8_0) {
    const BlockQ8_0* b = reinterpret_cast<const BlockQ8_0*>(row) + g;
    const __m256 d = _mm256_set1_ps(half_to_float(b->d));
    for (int j = 0; j < 4; ++j) {
      w[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(simd::load_i8x8(b->qs + 8 * j)), d);
    }
  } else if constexpr (T == DType::F32) {
    const float* p = reinterpret_cast<const float*>(row) + g * 32;
    for (int j = 0; j < 4; ++j) w[j] = _mm256_loadu_ps(p + 8 * j);
  } else if constexpr (T == DType::F16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + g * 32;
    for (int j = 0; j < 4; ++j) w[j] = simd::load_f16x8(p + 8 * j);
  } else if constexpr (T == DType::BF16) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + g * 32;
    for (int j = 0; j < 4; ++j) w[j] = simd::load_bf16x8(p + 8 * j);
  }
}

// y[m][n] for the R activation rows m0 .. m0 + R - 1 (x rows K apart) of one
// weight row. Values past the last whole 32-group (plain types only: quantized
// K is a whole number of blocks) are added after the reduction.
template <DType T, int R>
void row_tile(const uint8_t* row, int64_t K, const float* x, int64_t m0, float* out, int64_t out_stride) {
  __m256 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_ps();
  const int64_t groups = K / 32;
  const float* x0 = x + m0 * K;
  for (int64_t g = 0; g < groups; ++g) {
    __m256 w[4];
    load_group<T>(row, g, w);
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 4; ++j)
        acc[r][j] = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x0 + r * K + g * 32 + 8 * j), acc[r][j]);
  }
  for (int r = 0; r < R; ++r) {
    float s = simd::hsum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    const float* xr = x0 + r * K;
    for (int64_t k = groups * 32; k < K; ++k) {
      float wv;
      if constexpr (T == DType::F32) wv = reinterpret_cast<const float*>(row)[k];
      else if constexpr (T == DType::F16) wv = half_to_float(reinterpret_cast<const uint16_t*>(row)[k]);
      else wv = bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[k]);
      s += wv * xr[k];
    }
    out[r * out_stride] = s;
  }
}

template <DType T>
void rows_kernel(const uint8_t* w, uint64_t row_bytes, int64_t n0, int64_t n1, int64_t K, const float* x, int64_t M,
                 float* y, int64_t N) {
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w + uint64_t(n) * row_bytes;
    int64_t m = 0;
    for (; m + kTile <= M; m += kTile) row_tile<T, kTile>(row, K, x, m, y + m * N + n, N);
    if (M - m == 2) row_tile<T, 2>(row, K, x, m, y + m * N + n, N);
    if (M - m == 1) row_tile<T, 1>(row, K, x, m, y + m * N + n, N);
  }
}

#endif  // FLINT_QUANT_AVX2

// Any dtype: dequantize the whole row once, then dot it with each x row.
void rows_generic(DType t, const uint8_t* w, uint64_t row_bytes, int64_t n0, int64_t n1, int64_t K, const float* x,
                  int64_t M, float* y, int64_t N) {
  std::vector<float> buf(static_cast<size_t>(K));
  for (int64_t n = n0; n < n1; ++n) {
    dequantize_row(t, w + uint64_t(n) * row_bytes, buf.data(), K);
    for (int64_t m = 0; m < M; ++m) y[m * N + n] = dot_f32(buf.data(), x + m * K, K);
  }
}

void rows(const MatmulOutput& o, int64_t n0, int64_t n1, int64_t K, const float* x, int64_t M) {
  const auto* w = static_cast<const uint8_t*>(o.w);
#ifdef FLINT_QUANT_AVX2
  switch (o.dtype) {
    case DType::Q4_1: return rows_kernel<DType::Q4_1>(w, o.row_bytes, n0, n1, K, x, M, o.y, o.N);
    case DType::Q4_0: return rows_kernel<DType::Q4_0>(w, o.row_bytes, n0, n1, K, x, M, o.y, o.N);
    case DType::Q8_0: return rows_kernel<DType::Q8_0>(w, o.row_bytes, n0, n1, K, x, M, o.y, o.N);
    case DType::F32: return rows_kernel<DType::F32>(w, o.row_bytes, n0, n1, K, x, M, o.y, o.N);
    case DType::F16: return rows_kernel<DType::F16>(w, o.row_bytes, n0, n1, K, x, M, o.y, o.N);
    case DType::BF16: return rows_kernel<DType::BF16>(w, o.row_bytes, n0, n1, K, x, M, o.y, o.N);
    default: break;  // K-quants: the generic path
  }
#endif
  rows_generic(o.dtype, w, o.row_bytes, n0, n1, K, x, M, o.y, o.N);
}

}  // namespace

void matmul_multi(const MatmulOutput* outputs, int num_outputs, int64_t K, const float* x, int64_t M,
                  ThreadPool* pool) {
  int64_t total = 0;
  for (int i = 0; i < num_outputs; ++i) total += outputs[i].N;
  // Rows of all outputs as one range [0, total); a chunk may span outputs.
  parallel_for(pool, total, 8, [&](int64_t begin, int64_t end) {
    int64_t base = 0;
    for (int i = 0; i < num_outputs && begin < end; ++i) {
      const int64_t lo = std::max(begin, base), hi = std::min(end, base + outputs[i].N);
      if (lo < hi) rows(outputs[i], lo - base, hi - base, K, x, M);
      base += outputs[i].N;
    }
  });
}

void matmul(DType t, const void* w, uint64_t row_bytes, int64_t N, int64_t K, const float* x, int64_t M, float* y,
            ThreadPool* pool) {
  MatmulOutput o{t, w, row_bytes, N, y};
  matmul_multi(&o, 1, K, x, M, pool);
}

}  // namespace flint::cpu
