// TwinBackend: the CUDA backend's forward pass (model/cuda_forward.h) run on the host through the kernels' CPU
// twins, with the CUDA backend's weight packing, KV layout, staging arrays and graph-bucket padding. It checks
// everything CudaBackend does except the kernels themselves (which the GPU tests compare with these same twins)
// and the CUDA calls, on a machine without a GPU: its unit test compares it with CpuBackend. Slow (scalar twins);
// for tests only.
#pragma once
#include <vector>

#include "model/backend.h"
#include "model/cuda_forward.h"
#include "model/model_weights.h"

namespace flint {

struct TwinBackendOptions {
  int32_t block_size = 16;
  int32_t num_kv_blocks = 0;  // 0: one sequence of the model's context
  int32_t max_tokens_per_step = 256;
  int32_t max_seqs_per_step = 16;
  bool pad_decode_to_buckets = true;  // run decode-only steps as CudaBackend replays its graphs: padded to a bucket
  bool sample_on_device = true;       // forward_sample as CudaBackend's: the twin sampler (cpu::sample) on its logits
};

class TwinBackend : public Backend {
 public:
  TwinBackend(const ModelConfig& config, const ModelWeights& weights, const TwinBackendOptions& options = {});
  void forward(const StepPlan& plan, float* logits) override;
  bool samples_on_device() const override { return options_.sample_on_device; }
  bool decode_matches_prefill() const override { return false; }  // the CUDA kernels' twins: as CudaBackend
  void forward_sample(const StepPlan& plan, const cpu::SampleBatch& batch, int32_t* token_ids, float* logprobs) override;
  const ModelConfig& config() const override { return config_; }
  int32_t block_size() const override { return block_size_; }
  int32_t num_kv_blocks() const override { return num_blocks_; }
  void set_observer(LayerObserver observer) override { observer_ = std::move(observer); }
  // The bucket size the last forward was padded to and the graph table width it took (0, 0: eager), for tests.
  int32_t last_bucket() const { return last_bucket_; }
  int32_t last_width() const { return last_width_; }

 private:
  friend struct TwinOps;
  // The forward pass; the plan's logit rows are left in B_.logits.
  void run(const StepPlan& plan);
  ModelConfig config_;
  TwinBackendOptions options_;
  int32_t block_size_ = 0, num_blocks_ = 0, table_width_ = 0, last_bucket_ = 0, last_width_ = 0;
  std::vector<std::vector<bf16_bits>> weights_;  // every packed weight
  std::vector<bf16_bits> kv_;
  std::vector<float> inv_freq_, f32_buffers_[3];
  std::vector<bf16_bits> bf16_buffers_[7];
  std::vector<uint8_t> matmul_ws_, attn_ws_;
  std::vector<int32_t> staging_;
  std::vector<uint8_t> sample_staging_;  // the packed sampling batch (cuda_sample_layout)
  std::vector<int32_t> buckets_, widths_;
  std::vector<ForwardLayer> layers_;
  ForwardBuffers B_;
  const StepPlan* plan_ = nullptr;  // the step being run, for observe_kv
  LayerObserver observer_;
};

}  // namespace flint
