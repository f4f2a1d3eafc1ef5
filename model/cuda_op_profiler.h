// Per-op GPU time of the CUDA backend's steps (bench/engine_bench --profile): while on, a step runs eagerly and
// each op of its forward pass and the sampler is recorded between two CUDA events. So that the events time the
// GPU's work and not the host's launches, the step is queued behind a hold (a one-thread kernel spinning on a
// flag in mapped host memory) and released once all of it is queued. Events between kernels also end the
// programmatic dependent launch overlap a graph replay has, so the ops' sum is an upper bound of their share in a
// served step; the step's own GPU time is recorded beside it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace flint {

struct OpTime {
  std::string op;  // the forward pass's name for it ("qkv matmul", "paged_attention", "sampling", ...)
  int64_t calls = 0;
  double ms = 0;   // summed over the profiled steps
};

struct OpProfile {
  int64_t steps = 0;
  double step_ms = 0;       // GPU time from the step's first queued work to its last, summed
  std::vector<OpTime> ops;  // in the order first seen
};

class CudaOpProfiler {
 public:
  CudaOpProfiler() = default;
  ~CudaOpProfiler();
  CudaOpProfiler(const CudaOpProfiler&) = delete;
  CudaOpProfiler& operator=(const CudaOpProfiler&) = delete;

  // Queues the hold and the step's start event on `stream`. Throws flint::Error naming a failed CUDA call.
  void begin_step(cudaStream_t stream);
  // Record the events around one op: op_begin before queuing it, op_end after (ops do not nest).
  void op_begin(const char* op, cudaStream_t stream);
  void op_end(cudaStream_t stream);
  // Queues the step's end event and releases the hold (before the caller synchronises the stream).
  void end_step(cudaStream_t stream);
  // Releases the hold without recording (a step that failed while queuing).
  void release();
  // After the stream was synchronised: adds the step's op times to the profile.
  void collect();

  const OpProfile& profile() const { return profile_; }
  void reset() { profile_ = {}, index_.clear(); }

 private:
  cudaEvent_t event(size_t i);  // from the pool, created on first use

  std::vector<cudaEvent_t> events_;
  size_t used_ = 0;                                   // events recorded this step
  std::vector<std::pair<size_t, size_t>> pending_;    // (index in profile_.ops, its first event) this step
  std::map<std::string, size_t> index_;
  OpProfile profile_;
  volatile int32_t* flag_host_ = nullptr;  // mapped pinned memory: 0 holds the stream, 1 releases it
  int32_t* flag_dev_ = nullptr;
  bool in_step_ = false;
};

}  // namespace flint
