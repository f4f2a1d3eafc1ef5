// CUDA_CHECK: the one check for CUDA runtime calls in programs (tests, benchmarks). A failed call prints file, line,
// the call and the error's name, then ends the program: after a failed call the context is suspect. Library
// launchers do not use it; they return the cudaError_t to their caller.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>

namespace flint::cuda {
[[noreturn]] inline void cuda_fail(cudaError_t e, const char* call, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", file, line, call, cudaGetErrorName(e), cudaGetErrorString(e));
  std::exit(2);
}
}  // namespace flint::cuda

#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    const cudaError_t flint_cuda_check_e = (call);                                         \
    if (flint_cuda_check_e != cudaSuccess) ::flint::cuda::cuda_fail(flint_cuda_check_e, #call, __FILE__, __LINE__); \
  } while (0)
// After every kernel launch.
#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())
