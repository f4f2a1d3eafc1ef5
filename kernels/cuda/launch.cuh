// How every Flint kernel is launched: with programmatic dependent launch (PDL, sm_90), so that inside a decode
// step's CUDA graph a kernel's launch and block scheduling overlap the end of the kernel before it. A decode step
// is ~170 kernels for Llama-3.2-1B, each only a few microseconds; the gap between two dependent kernels is what
// PDL hides, not any of their memory traffic.
//
// The rule that keeps this correct: every kernel's first statement is pdl_begin(). Its griddepcontrol.wait
// returns once the kernel before it on the stream has completed and its writes are visible (at once when the
// kernel was not launched with PDL), so no global memory access of a kernel, read or write, overlaps the kernel
// before it; then griddepcontrol.launch_dependents lets the next kernel start launching. scripts/check-kernels.py
// (CTest lint.kernels) checks the rule on every __global__ function in kernels/cuda/.
//
// FLINT_PDL=off (read once per process) launches without the attribute: the A/B switch for the device benchmark,
// and the way out if a driver mishandles it. Devices below compute capability 9.0 get plain launches.
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

namespace flint::cuda {

#ifdef FLINT_CUDA_EMU
inline void pdl_begin() {}  // the emulator runs a stream's kernels one after another
#else
__device__ __forceinline__ void pdl_begin() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}
#endif

// Whether launches carry the PDL attribute: FLINT_PDL is not "off" or "0", and the device current at the first
// call is sm_90 or newer.
inline bool pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("FLINT_PDL");
    if (v && (std::strcmp(v, "off") == 0 || std::strcmp(v, "0") == 0)) return false;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
      return false;
    return major >= 9;
  }();
  return enabled;
}

// kernel<<<grid, block, smem, stream>>>(args...) with the PDL attribute when pdl_enabled(); returns the launch's
// error (cudaGetLastError after it, as the <<<>>> launchers did).
template <class... P, class... A>
cudaError_t launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  // In the struct's order (gridDim, blockDim, dynamicSmemBytes, stream, attrs, numAttrs): the CUDA emulator
  // defines gridDim and blockDim as macros, so the fields are not named here.
  const cudaLaunchConfig_t config = {grid, block, smem, stream, attr, pdl_enabled() ? 1u : 0u};
  const cudaError_t e = cudaLaunchKernelEx(&config, kernel, std::forward<A>(args)...);
  const cudaError_t last = cudaGetLastError();
  return e != cudaSuccess ? e : last;
}

}  // namespace flint::cuda
