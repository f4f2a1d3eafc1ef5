// Host side of kernels/cuda/launch.cuh that plain C++ may include: whether kernels are launched with programmatic
// dependent launch (PDL), and the switch that turns it off for the rest of the process.
#pragma once
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace flint::cuda {

namespace launch_detail {
inline std::atomic<int>& pdl_state() {  // -1: not decided yet, 0 off, 1 on
  static std::atomic<int> state{-1};
  return state;
}
}  // namespace launch_detail

// Whether launches carry the PDL attribute: decided at the first call (FLINT_PDL is not "off" or "0", and the
// current device is sm_90 or newer) unless pdl_set or pdl_disable decided it first.
inline bool pdl_enabled() {
  int s = launch_detail::pdl_state().load(std::memory_order_relaxed);
  if (s < 0) {
    const char* v = std::getenv("FLINT_PDL");
    int dev = 0, major = 0;
    const bool off = v && (std::strcmp(v, "off") == 0 || std::strcmp(v, "0") == 0);
    const bool hopper = cudaGetDevice(&dev) == cudaSuccess &&
                        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
                        major >= 9;
    int expected = -1;
    launch_detail::pdl_state().compare_exchange_strong(expected, !off && hopper ? 1 : 0);
    s = launch_detail::pdl_state().load(std::memory_order_relaxed);
  }
  return s == 1;
}

// Plain launches from now on, saying why once on stderr (a driver that refuses the attribute, in a launch or in
// stream capture: the kernels are correct either way, PDL only saves launch latency).
inline void pdl_disable(const std::string& why) {
  if (launch_detail::pdl_state().exchange(0) != 0)
    std::fprintf(stderr, "cuda kernels: programmatic dependent launch off from here on: %s\n", why.c_str());
}

// Overrides FLINT_PDL and the device check (tests).
inline void pdl_set(bool on) { launch_detail::pdl_state().store(on ? 1 : 0); }

}  // namespace flint::cuda
