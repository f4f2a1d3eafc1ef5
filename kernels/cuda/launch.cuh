// How every Flint kernel is launched: with programmatic dependent launch (PDL, sm_90), so that inside a decode
// step's CUDA graph a kernel's launch and block scheduling overlap the end of the kernel before it. A decode step
// is ~170 kernels for Llama-3.2-1B, each only a few microseconds; the gap between two dependent kernels is what
// PDL hides, not any of their memory traffic.
//
// The rule that keeps this correct: every kernel's first statement is pdl_begin(). Its griddepcontrol.wait
// returns once the kernel before it on the stream has completed and its writes are visible (at once when the
// kernel was not launched with PDL), so no global memory access of a kernel, read or write, overlaps the kernel
// before it; then griddepcontrol.launch_dependents lets the next kernel start launching. The exceptions follow
// pdl_weights_first() (below): memory nothing writes during a step (the weights) may be read before pdl_begin(), and
// so may L2 prefetches be issued (prefetch_l2: hints, no result depends on them) with the addresses computed from
// anything, as long as what was read for them is not used after the wait (read it again) and every address is kept
// inside its allocation.
// scripts/check-kernels.py (CTest lint.kernels) checks the rule on every __global__ function in kernels/cuda/: it
// starts with pdl_begin(), or with pdl_weights_first() and calls pdl_begin().
//
// FLINT_PDL=off launches without the attribute: the A/B switch for the device benchmark, and the way out if a driver
// mishandles it. Devices below compute capability 9.0 get plain launches (launch.h). A launch the driver refuses
// with the attribute is retried without it, and PDL is off from then on; stream capture that fails with it is
// retried the same way by the CUDA backend.
#pragma once
#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "kernels/cuda/launch.h"

namespace flint::cuda {

#ifdef FLINT_CUDA_EMU
inline void pdl_begin() {}  // the emulator runs a stream's kernels one after another
inline void pdl_weights_first() {}
#else
__device__ __forceinline__ void pdl_begin() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}
// The weights-first form: a kernel whose first statement is pdl_weights_first() may read memory that no kernel
// writes while steps run (the model's weights: uploaded, and the stream synchronised, before the first step) before
// its pdl_begin(), and nothing else. Under PDL those loads then overlap the end of the kernel before it. The rest of
// pdl_begin stays as it is: launch_dependents only after the wait, so at most one kernel waits behind a running
// one (triggering first would let every queued kernel launch and hold SM slots while it waits).
__device__ __forceinline__ void pdl_weights_first() {}
#endif

// kernel<<<grid, block, smem, stream>>>(args...) with the PDL attribute when pdl_enabled(); returns the launch's
// error (cudaGetLastError after it, as the <<<>>> launchers did).
template <class... P, class... A>
cudaError_t launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  // In the struct's order (gridDim, blockDim, dynamicSmemBytes, stream, attrs, numAttrs): the CUDA emulator
  // defines gridDim and blockDim as macros, so the fields are not named here.
  cudaLaunchConfig_t config = {grid, block, smem, stream, attr, pdl_enabled() ? 1u : 0u};
  cudaError_t e = cudaLaunchKernelEx(&config, kernel, args...);
  cudaError_t last = cudaGetLastError();
  if (e == cudaSuccess) e = last;
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  // Refused with the attribute (outside capture, which the backend retries as a whole): retried without it. Only a
  // retry that succeeds turns PDL off; a launch that fails both ways (a bad configuration, say) reports the plain
  // launch's error, the attribute not being the cause, and changes nothing.
  if (config.numAttrs && (e == cudaErrorNotSupported || e == cudaErrorInvalidValue) &&
      cudaStreamIsCapturing(stream, &capturing) == cudaSuccess && capturing == cudaStreamCaptureStatusNone) {
    config.numAttrs = 0;
    cudaError_t plain = cudaLaunchKernelEx(&config, kernel, std::forward<A>(args)...);
    last = cudaGetLastError();
    if (plain == cudaSuccess) plain = last;
    if (plain == cudaSuccess) pdl_disable(std::string("a launch with the attribute failed: ") + cudaGetErrorName(e));
    e = plain;
  }
  return e;
}

}  // namespace flint::cuda
