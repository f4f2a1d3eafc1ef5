// model/cuda_op_profiler.h.
#include "model/cuda_op_profiler.h"

#include <cuda_runtime.h>

#include "common/error.h"
#include "kernels/cuda/ops.h"

namespace flint {

namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("op profiler: ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}
}  // namespace

CudaOpProfiler::~CudaOpProfiler() {
  release();
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
  if (flag_host_) cudaFreeHost(const_cast<int32_t*>(flag_host_));
}

cudaEvent_t CudaOpProfiler::event(size_t i) {
  while (events_.size() <= i) {
    cudaEvent_t e = nullptr;
    check(cudaEventCreate(&e), "cudaEventCreate");
    events_.push_back(e);
  }
  return events_[i];
}

void CudaOpProfiler::begin_step(cudaStream_t stream) {
  if (!flag_host_) {
    void* host = nullptr;
    check(cudaHostAlloc(&host, sizeof(int32_t), cudaHostAllocMapped), "cudaHostAlloc (the hold's flag)");
    flag_host_ = static_cast<volatile int32_t*>(host);
    check(cudaHostGetDevicePointer(reinterpret_cast<void**>(&flag_dev_), host, 0), "cudaHostGetDevicePointer");
  }
  *flag_host_ = 0;
  in_step_ = true;
  used_ = 0;
  pending_.clear();
  check(cuda::hold_stream(flag_dev_, stream), "the hold kernel");
  check(cudaEventRecord(event(used_++), stream), "cudaEventRecord");
}

void CudaOpProfiler::op_begin(const char* op, cudaStream_t stream) {
  auto [it, fresh] = index_.try_emplace(op, profile_.ops.size());
  if (fresh) profile_.ops.push_back({op, 0, 0});
  pending_.emplace_back(it->second, used_);
  check(cudaEventRecord(event(used_++), stream), "cudaEventRecord");
}

void CudaOpProfiler::op_end(cudaStream_t stream) {
  check(cudaEventRecord(event(used_++), stream), "cudaEventRecord");
}

void CudaOpProfiler::end_step(cudaStream_t stream) {
  check(cudaEventRecord(event(used_++), stream), "cudaEventRecord");
  release();
}

void CudaOpProfiler::release() {
  if (flag_host_) *flag_host_ = 1;
}

void CudaOpProfiler::collect() {
  if (!in_step_) return;
  in_step_ = false;
  float ms = 0;
  check(cudaEventElapsedTime(&ms, events_[0], events_[used_ - 1]), "cudaEventElapsedTime");
  profile_.step_ms += ms;
  ++profile_.steps;
  for (const auto& [op, first] : pending_) {
    check(cudaEventElapsedTime(&ms, events_[first], events_[first + 1]), "cudaEventElapsedTime");
    profile_.ops[op].ms += ms;
    ++profile_.ops[op].calls;
  }
}

}  // namespace flint
