// The split sampler's launcher (kernels/cuda/sampling_split.cu), for sampling.cu's dispatch: one row's logits over
// several blocks, one stage of the row's work per launch. Not a public entry point: cuda::sample (sampling.h)
// chooses it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "kernels/sampling_params.h"

namespace flint::cuda {

constexpr int kSplitSampleThreads = 256;  // threads per block
constexpr int kMaxSampleSplit = 64;       // blocks per row, at most

// How a row is split: `blocks` slices of `slice` ids (a multiple of 4, so that a 16-byte-aligned row gives
// 16-byte-aligned slices), the last one shorter.
struct SplitSampleShape {
  int blocks = 1, slice = 0;
};

// Device scratch for num_rows rows: each row's state, candidate list and slice weights (about 36 KB a row).
size_t split_sample_workspace_bytes(int num_rows);

// Launches enough for the longest row (host copies of the rows' parameters when given, else the most any row can
// need, 19): 1 for the max and penalties, 1 for a greedy row's logprob sum, 8 per radix select, 1 for top-p's
// total and 1 for the draw.
int split_sample_stages(const SampleRow* maybe_host_rows, int num_rows, int vocab, bool logprobs);

// Queues the sampling of p's rows split as `shape` says, in p.maybe_workspace (split_sample_workspace_bytes(p.num_rows)
// bytes, 16-byte aligned): a memset of the rows' states, then split_sample_stages launches.
cudaError_t launch_split_sample(const SampleParams& p, const SplitSampleShape& shape, cudaStream_t stream);

}  // namespace flint::cuda
