// Sampling on the GPU: the next token of each row from that row's fp32 logits under its own parameters; only the
// token id (and its logprob) is written. Semantics, and the arithmetic the kernels share with their CPU twin
// (kernels/cpu/sampling.h), in kernels/sampling_params.h.
//
// A block per row (sampling.cu), every step a sweep of the row by the block, from L2 after the first: penalties
// (one thread per listed id); max and argmax; the total weight; top-k as a radix select of the k-th order key
// (8 passes of 8 bits, integer counts in shared memory; once few candidates are left they are listed and the
// passes after read the list); top-p as a radix select of the prefix whose weight reaches the target (integer
// weights); the kept total, the draw, and a block-wide scan of the kept weights in id order to find the token.
// Integer histograms make every sum exact: no order to agree on. On the H200 one row at vocab 151936 took
// 355-539 us with top-k or top-p and 39 us greedy (docs/perf.md): one SM sweeping 152k logits 6-8 times.
//
// The split sampler (sampling_split.cu), for batches that leave SMs idle: each row over several blocks, one stage
// of the same algorithm per launch, the blocks' histograms and sums added in global memory and the last block to
// arrive finishing the stage. The same sums, so the same token, bit for bit.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "kernels/sampling_params.h"

namespace flint::cuda {

// Queues the sampling of p.num_rows rows on `stream`. Checks p's shapes once (sample_params_error): invalid
// returns cudaErrorInvalidValue and, when `error` is given, why; the rows' parameters are the caller's to check
// (sample_row_error) before they are uploaded. Otherwise returns the launch's error.
// With p.maybe_workspace (at least sample_workspace_bytes(p.num_rows), 16-byte aligned) and the split sampler on,
// a batch small enough to leave SMs idle is sampled with each row split over several blocks
// (kernels/cuda/sampling_split.cu): the same tokens and logprobs, bit for bit.
cudaError_t sample(const SampleParams& p, cudaStream_t stream, std::string* error = nullptr);

// The workspace the split sampler needs for batches of up to num_rows rows (about 36 KB a row; batches of two rows
// per SM or more are never split, so it stops growing there).
size_t sample_workspace_bytes(int num_rows);

// The split sampler's smallest slice, in ids (0: off, every row one block). FLINT_SAMPLE=split turns it on with
// slices of at least 2048 ids, FLINT_SAMPLE=split:N with slices of at least N (rounded up to a multiple of 4); read
// once per process. Off by default until a device has measured it (docs/perf.md).
int sample_split_min_slice();
// Overrides FLINT_SAMPLE (tests and benchmarks): 0 off, else the smallest slice, rounded up to a multiple of 4.
void set_sample_split_min_slice(int ids);
// How many blocks sample() gives each row of a num_rows × vocab batch when it has the workspace (1: a block per row).
int sample_blocks_per_row(int num_rows, int vocab);

}  // namespace flint::cuda
