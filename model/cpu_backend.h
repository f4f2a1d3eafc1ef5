// CpuBackend: the model's forward pass on the CPU in fp32 over weights kept in
// their file's form (quantized rows dequantized inside the matmul), with a
// paged fp32 KV cache. The reference every other backend is compared with.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/ops.h"
#include "model/backend.h"
#include "model/model_weights.h"

namespace flint {

struct CpuBackendOptions {
  int32_t num_kv_blocks = 0;  // 0: enough for one sequence of the model's max context
  int32_t block_size = 16;
  int32_t num_threads = 0;    // 0: all hardware threads
};

class CpuBackend : public Backend {
 public:
  // `weights` point into a WeightSource that must outlive the backend.
  CpuBackend(const ModelConfig& config, const ModelWeights& weights, const CpuBackendOptions& options = {});

  void forward(const StepPlan& plan, float* logits) override;
  const ModelConfig& config() const override { return config_; }
  int32_t block_size() const override { return block_size_; }
  int32_t num_kv_blocks() const override { return num_blocks_; }
  int num_threads() const { return pool_.num_threads(); }

  // The per-layer diff's hook (model/backend.h): embedding; per layer q, k (both after RoPE), v, attn,
  // attn_residual, out; final_norm (on the logit rows only).
  using Observer = LayerObserver;
  void set_observer(LayerObserver observer) override { observer_ = std::move(observer); }

 private:
  struct LayerVectors {  // small per-layer vectors kept in fp32
    std::vector<float> attn_norm, ffn_norm, bq, bk, bv, q_norm, k_norm;
  };
  void matmul(const Tensor& w, const float* x, int64_t m, float* y);
  // Up to three weights over the same input h_ in one parallel pass (w2 may be null).
  void matmul3(const Tensor* w0, float* y0, const Tensor* w1, float* y1, const Tensor* w2, float* y2, int64_t m);
  void observe(const char* name, int layer, const float* data, int64_t rows, int64_t cols);

  ModelConfig config_;
  ModelWeights weights_;
  int32_t block_size_, num_blocks_;
  ThreadPool pool_;
  std::vector<LayerVectors> layer_vectors_;
  std::vector<float> output_norm_;
  cpu::RopeParams rope_;
  std::vector<float> inv_freq_;
  std::vector<std::vector<float>> k_cache_, v_cache_;  // per layer
  std::vector<float> x_, h_, q_, k_, v_, attn_, proj_, gate_, up_;  // activations, grown on demand
  Observer observer_;
};

// A small vector tensor (norm weight, bias) converted to fp32; checks its length.
std::vector<float> tensor_to_f32(const Tensor& t, int64_t expected_numel);

}  // namespace flint
