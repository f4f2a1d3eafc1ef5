// The CUDA backend's host-side arithmetic, kept apart from any CUDA call so that it builds and is tested on a
// machine without a GPU (tests/unit/cuda_backend_host_test.cpp): the KV cache size from a byte budget, the CUDA
// graph batch buckets, the layout of one step's index arrays in the staging buffer, and how the per-layer weights
// are packed for the matmul epilogues (q/k/v rows concatenated for Qkv, gate/up rows interleaved for SiluMul).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu/sampling.h"
#include "kernels/ops_params.h"
#include "model/config.h"
#include "model/cuda_forward.h"
#include "model/model_weights.h"
#include "model/step_plan.h"

namespace flint {

// ---- KV cache budget.
// Bytes one KV block takes over all layers: K and V, bf16, num_kv_heads · head_dim values per token.
uint64_t cuda_kv_bytes_per_block(const ModelConfig& config, int32_t block_size);
// Whole blocks that fit in `budget_bytes` (0 when not even one does); capped at 2^30 - 1.
int64_t cuda_kv_blocks_for_bytes(uint64_t budget_bytes, const ModelConfig& config, int32_t block_size);
// The budget when --kv-cache-memory is not given: this fraction of the device memory still free after the
// weights, activations and workspaces are allocated. 40%, not 90%: a small model often shares its GPU with other
// processes (another server, a notebook), and what is left covers the CUDA graphs, cuBLASLt and the driver.
constexpr double kCudaDefaultKvFraction = 0.40;
uint64_t cuda_default_kv_budget(uint64_t free_bytes);

// ---- CUDA graph buckets.
// The batch sizes a decode graph is captured for: 1, 2, 4, ..., 256 up to max_seqs, and max_seqs itself when it
// is not a power of two (so every decode step up to max_seqs has a bucket). Ascending.
std::vector<int32_t> cuda_graph_buckets(int32_t max_seqs);
// Index into `buckets` of the smallest bucket >= num_seqs, or -1 when none (the step then runs eagerly).
int32_t cuda_pick_graph_bucket(const std::vector<int32_t>& buckets, int32_t num_seqs);
// The block-table widths a decode graph is captured for, ascending: those covering contexts of 512, 2048, 8192,
// ... tokens (x4) below the full width, then table_width itself. A graph's attention is sized for its width
// (width · block_size keys a sequence, one split per 128), so a step of short sequences replays a graph that
// launches for its contexts, not for the model's whole context.
std::vector<int32_t> cuda_graph_widths(int32_t table_width, int32_t block_size);
// A decode-only step: every sequence is a decode (StepPlan::num_decode_seqs), feeds exactly one token and wants its
// logits (the case graphs replay).
bool is_decode_only(const StepPlan& plan);

// ---- One step's index arrays in the pinned staging buffer and its device mirror (int32 elements), laid end to
// end so that one copy uploads them all. For a graph bucket of b sequences the layout of (b, b, width, b) is fixed,
// so the captured kernels keep reading the same addresses.
struct StepLayout {
  int64_t token_ids = 0, positions = 0, cu_seqlens = 0, kv_lens = 0, block_table = 0, logit_rows = 0;
  int64_t total = 0;  // int32 elements in all
};
StepLayout cuda_step_layout(int32_t num_tokens, int32_t num_seqs, int32_t table_width, int32_t num_logit_rows);
// Writes plan's arrays into `staging` at `layout` (block table rows widened to `table_width` with block 0, never
// read). With pad_to_seqs > plan.num_seqs() (a graph bucket; decode-only plans only), appends padding sequences as
// kernels/attention_params.h defines them (one token, id 0, at position -1, kv_len 0: nothing read or written in
// the cache) and lists every row 0..pad_to_seqs-1 as a logit row (an empty plan gives all-padding inputs, for the
// graph capture). Returns the largest kv_len and query length of the real sequences.
struct StepMaxima {
  int32_t max_kv_len = 0, max_q_len = 0;
};
StepMaxima cuda_fill_staging(const StepPlan& plan, const StepLayout& layout, int32_t table_width, int32_t pad_to_seqs,
                             int32_t* staging);

// One step's inputs: fills `staging` for `plan` and returns the shape run_forward takes. bucket_size > 0: a graph
// replay (decode-only plan, or an empty plan at capture) padded to bucket_size sequences, the block table
// table_width wide and max_kv_len the context's upper bound (table_width · block_size), as the captured graph
// was. bucket_size 0: an eager step, the plan's own width and maxima. *elems gets the int32 count to upload.
StepShape cuda_prepare_step(const StepPlan& plan, int32_t bucket_size, int32_t table_width, int32_t block_size,
                            int32_t* staging, int64_t* elems);

// ---- The L2 prefetch budget (ForwardBuffers::l2_prefetch_budget) from FLINT_L2_PREFETCH (`env`, may be null):
// unset, "off" or "0": 0 (off); "on": three quarters of the device's L2 (l2_bytes); "N" (1 to 4096): N MiB.
// Anything else throws, naming the variable and what it takes.
int64_t cuda_l2_prefetch_budget(const char* env, int64_t l2_bytes);

// ---- A step's sampling batch (cpu::SampleBatch) in one buffer, for one copy to the device: the rows, then the
// penalty lists' arrays, each at a 16-byte aligned byte offset.
struct CudaSampleLayout {
  size_t rows = 0, rep_offsets = 0, rep_ids = 0, freq_offsets = 0, freq_ids = 0, freq_counts = 0;
  size_t total = 0;  // bytes in all
};
CudaSampleLayout cuda_sample_layout(int32_t num_rows, size_t num_rep_ids, size_t num_freq_ids);
// Checks the batch (its rows' parameters, sample_row_error, and that its lists have one entry per row: the kernel
// takes both as given) and copies it into dst (the layout's total bytes); returns the layout.
CudaSampleLayout cuda_pack_sample_batch(const cpu::SampleBatch& batch, uint8_t* dst, size_t dst_bytes);
// The SampleParams of a packed batch whose copy starts at `base` (device memory for the kernel; the host buffer for
// a test of the packing with the twin).
SampleParams cuda_sample_params(const CudaSampleLayout& layout, int32_t num_rows, uint8_t* base, float* logits,
                                int32_t vocab, int32_t* token_ids, float* maybe_logprobs);

// ---- Weight packing. A packed weight is one bf16 (rows, K) matrix; each source tensor is dequantized into it by
// one dequantize call that views `group_rows` consecutive source rows as one row of group_rows · K values and
// writes group g at packed row first_row + g · group_stride (so gate rows 8j..8j+7 land at 16j..16j+7).
struct PackPiece {
  const Tensor* src = nullptr;
  int64_t group_rows = 1;    // source rows per dequantize row
  int64_t first_row = 0;     // packed row of the first group
  int64_t group_stride = 1;  // packed rows between groups
};
struct PackedWeight {
  int64_t rows = 0, cols = 0;
  std::vector<PackPiece> pieces;
};
// q, k, v rows one after the other: (num_q + 2 num_kv, hidden), for MatmulEpilogue::Qkv.
PackedWeight pack_qkv(const LayerWeights& lw, const ModelConfig& config);
// The q, k, v biases the same way ((num_q + 2 num_kv), one row), or rows = 0 when the model has none.
PackedWeight pack_qkv_bias(const LayerWeights& lw, const ModelConfig& config);
// gate and up interleaved by gate_up_row() (kernels/matmul_params.h): (2 ffn, hidden), for MatmulEpilogue::SiluMul.
PackedWeight pack_gate_up(const LayerWeights& lw, const ModelConfig& config);
// A tensor as it is: (rows, cols).
PackedWeight pack_plain(const Tensor& t);
// The dequantize call for one piece: src points at the piece's tensor data (a device copy of it), dst at the packed
// weight's row 0 (dense, ld = packed cols).
DequantParams pack_piece_params(const PackedWeight& w, const PackPiece& piece, const void* src, bf16_bits* dst);

}  // namespace flint
