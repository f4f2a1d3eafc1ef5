// Sampling on the GPU: one block of kSampleThreads per row picks the next token from that row's fp32 logits under
// its own parameters and writes only the token id (and its logprob); semantics, and the arithmetic the kernel
// shares with its CPU twin (kernels/cpu/sampling.h), in kernels/sampling_params.h.
//
// How a row is done (every step a sweep of the row's logits by the block, from L2 after the first):
//   penalties (one thread per listed id); max and argmax; the total weight; top-k as a radix select of the k-th
//   order key (8 sweeps of 8 bits, integer counts in shared memory); top-p as a radix select of the prefix whose
//   weight reaches the target (8 sweeps, integer weights); the kept total, the draw, and a block-wide scan of the
//   kept weights in id order to find the token. Integer histograms make every sum exact: no order to agree on.
// Cost: 3 sweeps + 8 per active filter (top-k, top-p), + 1 for min-p alone, + 2 for the draw; at vocab 152k each
// sweep reads 600 KB (L2-resident after the first). Not yet measured on a GPU.
#pragma once
#include <cuda_runtime_api.h>

#include <string>

#include "kernels/sampling_params.h"

namespace flint::cuda {

// Queues the sampling of p.num_rows rows on `stream`. Checks p's shapes once (sample_params_error): invalid
// returns cudaErrorInvalidValue and, when `error` is given, why; the rows' parameters are the caller's to check
// (sample_row_error) before they are uploaded. Otherwise returns the launch's error.
cudaError_t sample(const SampleParams& p, cudaStream_t stream, std::string* error = nullptr);

}  // namespace flint::cuda
