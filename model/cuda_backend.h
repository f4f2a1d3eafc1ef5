// CudaBackend: the model's forward pass on one GPU in bf16 (fp32 residual stream, fp32 logits), built from the
// kernels in kernels/cuda/. Compiled only when CUDA is built (flint_model_cuda); model/backend_factory.h picks it.
//
// Laid out once at construction, nothing allocated per step:
//   weights   one device allocation; every tensor dequantized from its file type to bf16 on the device
//             (cuda::dequantize). q/k/v rows concatenated (and their biases) for the Qkv epilogue, gate/up rows
//             interleaved for the SiluMul epilogue (model/cuda_backend_host.h says how).
//   KV cache  bf16, all layers in one allocation, make_paged_kv_cache per layer. Sized from kv_cache_memory,
//             else kCudaDefaultKvFraction of the memory free after weights and activations.
//   buffers   activations for max_tokens_per_step tokens, matmul and attention workspaces for the largest step,
//             a pinned staging buffer and its device mirror for the step's index arrays (one copy per step).
//   sampling  on the device (forward_sample): the step's rows and penalty lists go over in one copy, the sampler
//             (kernels/cuda/sampling.h) runs on the logits in place, and only ids and logprobs come back.
//   graphs    one CUDA graph per decode batch bucket (cuda_graph_buckets) and block-table width
//             (cuda_graph_widths: contexts of 512, 2048, ... tokens up to the whole), captured at construction; a
//             decode-only step is padded to its bucket (padding sequences: kv_len 0, position -1,
//             attention_params.h) and replays the graph of the narrowest width holding its longest sequence, so
//             attention launches for the contexts at hand. Prefill and mixed steps run eagerly.
#pragma once
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "model/backend.h"
#include "model/cuda_forward.h"
#include "model/cuda_op_profiler.h"
#include "model/model_weights.h"

namespace flint {

struct CudaBackendOptions {
  int device = 0;                  // CUDA device ordinal
  int32_t block_size = 16;         // tokens per KV block
  int32_t num_kv_blocks = 0;       // > 0: exactly this many blocks (flint-run's --context); else from the budget
  uint64_t kv_cache_memory = 0;    // bytes of KV cache; 0: kCudaDefaultKvFraction of the free memory
  int32_t max_tokens_per_step = 2048;  // the scheduler's token budget: activations are sized for it
  int32_t max_seqs_per_step = 256;     // the scheduler's sequence limit: graph buckets and attention workspace
  int32_t max_logit_rows_per_step = 0; // rows of logits one step may ask for; 0: max_seqs_per_step (the engine's
                                       // one per sequence); flint-run --dump-logits asks for every prompt position
  bool cuda_graphs = true;         // capture decode graphs (off: every step eager, for debugging)
  bool log = true;                 // progress of the load and capture on stderr
};

class CudaBackend : public Backend {
 public:
  // Uploads the weights (the WeightSource behind `weights` may be released afterwards), allocates everything and
  // captures the decode graphs. Throws flint::Error naming the CUDA call or the unsupported shape.
  CudaBackend(const ModelConfig& config, const ModelWeights& weights, const CudaBackendOptions& options = {});
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  void forward(const StepPlan& plan, float* logits) override;
  // Samples on the GPU (kernels/cuda/sampling.h): only the token ids and logprobs come back.
  bool samples_on_device() const override { return true; }
  // The decode attention kernel (fp32 weights, split over keys) and the prefill one (bf16 P·V in key tiles) differ.
  bool decode_matches_prefill() const override { return false; }
  void forward_sample(const StepPlan& plan, const cpu::SampleBatch& batch, int32_t* token_ids, float* logprobs) override;
  // Set once a step failed with an error that leaves the CUDA context unusable (a kernel fault: illegal address,
  // launch failure, ...); every later step is refused with it.
  std::string fatal_error() const override { return fatal_; }
  const ModelConfig& config() const override { return config_; }
  int32_t block_size() const override { return block_size_; }
  int32_t num_kv_blocks() const override { return num_blocks_; }
  // Intermediates are copied back and the step runs eagerly (no graph) while an observer is set.
  void set_observer(LayerObserver observer) override { observer_ = std::move(observer); }

  // For the start-up log: device name, weight and KV bytes, graphs.
  std::string describe() const;
  uint64_t kv_cache_bytes() const { return kv_bytes_; }
  const std::vector<int32_t>& graph_buckets() const { return buckets_; }
  const std::vector<int32_t>& graph_widths() const { return widths_; }
  // Seconds the constructor spent capturing the decode graphs (0 with graphs off), as its log line says.
  double graph_capture_seconds() const { return capture_seconds_; }

  // Per-op GPU times (model/cuda_op_profiler.h): while on, steps run eagerly, held until queued, with events
  // around every op; op_profile() sums them over the profiled steps. Not while an observer is set. Engine thread.
  void set_op_profiling(bool on) { profiling_ = on; }
  const OpProfile& op_profile() const { return profiler_.profile(); }
  void reset_op_profile() { profiler_.reset(); }

 private:
  // The constructor's work after its checks; on a throw the constructor calls release() (no leak of device memory
  // when, say, the KV cache does not fit after the weights were uploaded).
  void initialize(const ModelWeights& weights, const CudaBackendOptions& options);
  // Frees everything allocated so far (the destructor's work; safe on a half-built backend).
  void release();
  // Validates the plan, uploads its index arrays and queues its forward pass (graph or eager) on stream_; the
  // logit rows are then in B_.logits. False for an empty plan (nothing queued).
  bool enqueue_step(const StepPlan& plan);
  void forward_logits(const StepPlan& plan, float* logits);
  void forward_and_sample(const StepPlan& plan, const cpu::SampleBatch& batch, int32_t* token_ids, float* logprobs);
  // Runs one step; when it throws, records fatal_ if the CUDA context is left unusable. Refuses once fatal_ is set.
  template <class F>
  void guarded(F&& step);
  void grow_sample_staging(size_t bytes);
  void* device_alloc(size_t bytes, const char* what);
  void upload_weights(const ModelWeights& weights);
  void allocate_buffers();
  void allocate_kv_cache(const CudaBackendOptions& options);
  void capture_graphs();
  // Ends a profiled step before the stream is synchronised (end_step), or after (collect); no-ops otherwise.
  void profile_end_step();
  void profile_collect();
  void capture_graphs_once();
  // Queues the whole forward pass (model/cuda_forward.h) for `shape` on stream_ (staging already uploaded).
  // `plan` is given for the observer (which reads K/V back from the cache slots it names); null while capturing.
  void enqueue_forward(const StepShape& shape, const StepPlan* plan);
  friend struct CudaOps;

  ModelConfig config_;
  int32_t block_size_ = 0, num_blocks_ = 0, table_width_ = 0;
  bool log_ = true;
  int device_ = 0;
  int32_t max_tokens_ = 0, max_seqs_ = 0, max_logit_rows_ = 0;
  cudaStream_t stream_ = nullptr;
  std::string device_name_;
  std::vector<void*> allocations_;  // every cudaMalloc, freed in the destructor
  uint64_t weight_bytes_ = 0, kv_bytes_ = 0, buffer_bytes_ = 0;

  std::vector<ForwardLayer> layers_;  // packed weights and KV cache per layer
  ForwardBuffers B_;                  // activations, workspaces, the device staging mirror, the other weights
  int32_t* staging_host_ = nullptr;  // pinned
  int32_t* staging_dev_ = nullptr;
  int64_t staging_elems_ = 0;

  // Device sampling: the batch (rows, penalty lists) packed in one pinned buffer, copied over in one go
  // (cuda_sample_layout); grown, rarely, when a batch's penalty lists outgrow it. The ids and logprobs come back
  // through sample_out_*: (max_logit_rows_) ids, then as many logprobs.
  uint8_t* sample_host_ = nullptr;
  uint8_t* sample_dev_ = nullptr;
  size_t sample_capacity_ = 0;
  int32_t* sample_out_host_ = nullptr;  // pinned
  int32_t* sample_out_dev_ = nullptr;
  void* sample_workspace_ = nullptr;    // the split sampler's (when it is on: cuda::sample_split_min_slice)
  size_t sample_workspace_bytes_ = 0;

  std::vector<int32_t> buckets_;         // decode graphs' batch sizes (cuda_graph_buckets)
  std::vector<int32_t> widths_;          // and block-table widths (cuda_graph_widths)
  std::vector<cudaGraphExec_t> graphs_;  // [bucket · widths_.size() + width] (empty when graphs are off)
  double capture_seconds_ = 0;
  LayerObserver observer_;
  CudaOpProfiler profiler_;
  bool profiling_ = false, step_profiled_ = false;
  std::string fatal_;  // engine thread only (the thread that runs the steps)
};

}  // namespace flint
