// REQUIRE_GPU for every GPU test binary (the kernel tests' gpu_test_util.h, the model and engine tests): skip
// without a usable device, fail instead under FLINT_REQUIRE_GPU (scripts/gpu-check.sh sets it: on the GPU machine a
// skip would hide a broken driver or runtime behind a green step).
#pragma once
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdlib>

namespace flint::gpu_test {

inline const char* gpu_error() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  return e != cudaSuccess ? cudaGetErrorName(e) : n == 0 ? "no device" : "ok";
}
inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}
// No GPU: skip, unless FLINT_REQUIRE_GPU is set (scripts/gpu-check.sh sets it: on the GPU machine a skip would hide
// a broken driver or runtime behind a green step).
#define REQUIRE_GPU()                                                                                      \
  do {                                                                                                     \
    if (::flint::gpu_test::have_gpu()) break;                                                              \
    if (std::getenv("FLINT_REQUIRE_GPU")) FAIL() << "no usable CUDA device (" << ::flint::gpu_test::gpu_error() << ")"; \
    GTEST_SKIP() << "no usable CUDA device (" << ::flint::gpu_test::gpu_error() << ")";                   \
  } while (0)

}  // namespace flint::gpu_test
