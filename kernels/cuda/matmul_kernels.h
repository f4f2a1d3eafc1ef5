// The matmul kernels' launchers, for the dispatcher (kernels/cuda/matmul.cu): each queues one kernel of
// matmul_decode.cu or matmul_prefill.cu over p (checked by the dispatcher) and returns the launch's error. Not a
// public interface: cuda::matmul (matmul.h) is.
#pragma once
#include <cuda_runtime_api.h>

#include "kernels/matmul_params.h"

namespace flint::cuda::mm {

// Decode (M <= 64): token groups of 8 rounded up to 1, 2, 4 or 8; vec: 16-byte loads (vector_loads_ok).
cudaError_t launch_decode(const MatmulParams& p, bool vec, int split_len, int num_splits, cudaStream_t stream);
// Mid (M <= 128, 16-byte loads only): token groups rounded up to 2, 4, 8, 12 or 16.
cudaError_t launch_mid(const MatmulParams& p, int split_len, int num_splits, cudaStream_t stream);
// Prefill (mma.sync) and PrefillWgmma (sm_90a; 16-byte loads only; kWarpgroups 1 or 2): *folded says whether the
// splits were added inside the kernel (then no reduction is left to run).
cudaError_t launch_prefill(const MatmulParams& p, bool vec, int split_len, int num_splits, cudaStream_t stream,
                           bool* folded);
cudaError_t launch_prefill_wgmma(const MatmulParams& p, int warpgroups, int split_len, int num_splits,
                                 cudaStream_t stream, bool* folded);

// SMs of the device current at the first call (132 when it cannot be asked).
int multiprocessor_count();

}  // namespace flint::cuda::mm
