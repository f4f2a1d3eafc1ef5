// Reference CPU ops in fp32: each is the twin of a CUDA kernel to come.
// Shapes in comments are row-major; "n" counts tokens (rows) unless said.
#pragma once
#include <cstdint>

#include "common/thread_pool.h"
#include "kernels/dtype.h"
#include "kernels/rope_style.h"

namespace flint::cpu {

// sum_i a[i] * b[i] in a fixed order (8-lane partial sums, then a fixed tree),
// so the result depends only on the inputs.
float dot_f32(const float* a, const float* b, int64_t n);

// table (vocab, d) in dtype `t`, rows `row_bytes` apart; ids (n) -> out (n, d)
void embedding(DType t, const void* table, uint64_t row_bytes, const int32_t* ids, int64_t n,
               int64_t d, float* out);

// x (n, d), weight (d) -> out (n, d) = x / sqrt(mean(x²) + eps) * weight   (out may be x)
void rms_norm(const float* x, const float* weight, float* out, int64_t n, int64_t d, float eps,
              ThreadPool* pool = nullptr);

// x (n, d) += y (n, d)
void add_inplace(float* x, const float* y, int64_t n, int64_t d);

// x (n, d) += bias (d)
void add_bias(float* x, const float* bias, int64_t n, int64_t d);

// gate (n, d), up (n, d) -> out (n, d) = gate * sigmoid(gate) * up
void silu_mul(const float* gate, const float* up, float* out, int64_t n, int64_t d);

// W (N, K) in dtype `t` (rows row_bytes apart) @ x (M, K) -> y (M, N):
// y[m][n] = sum_k W[n][k] x[m][k]. Each element is computed with the same
// arithmetic whatever M is (batch invariance), parallel over N on `pool`.
void matmul(DType t, const void* w, uint64_t row_bytes, int64_t N, int64_t K, const float* x,
            int64_t M, float* y, ThreadPool* pool = nullptr);

// Several weights sharing one input (QKV; gate and up) in one parallel pass:
// y_i (M, N_i) = W_i (N_i, K) @ x (M, K), each exactly as matmul() computes it.
struct MatmulOutput {
  DType dtype;
  const void* w;
  uint64_t row_bytes;
  int64_t N;
  float* y;
};
void matmul_multi(const MatmulOutput* outputs, int num_outputs, int64_t K, const float* x, int64_t M,
                  ThreadPool* pool = nullptr);

using flint::RopeStyle;

// Frequencies of RoPE for one head: inv_freq (head_dim / 2), with Llama-3
// scaling when scaling_factor > 0 (rope_type "llama3").
struct RopeParams {
  int32_t head_dim = 0;
  float theta = 10000.0f;
  RopeStyle style = RopeStyle::Halves;
  float scaling_factor = 0.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int32_t original_max_position = 8192;
};
void rope_inv_freq(const RopeParams& p, float* inv_freq);

// x (n, num_heads, head_dim) rotated in place by each token's position:
//  Halves:      (x[i], x[i + hd/2]) by angle pos * inv_freq[i]
//  Interleaved: (x[2i], x[2i + 1])  by angle pos * inv_freq[i]
void rope(float* x, const int32_t* positions, int64_t n, int64_t num_heads, const RopeParams& p,
          const float* inv_freq);

// Softmax of logits (n) into probs (n), in place allowed; returns log-sum-exp.
float softmax(const float* logits, float* probs, int64_t n);

}  // namespace flint::cpu
