#include "model/cuda_backend_host.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.h"
#include "kernels/l2_budget.h"

namespace flint {

uint64_t cuda_kv_bytes_per_block(const ModelConfig& config, int32_t block_size) {
  if (block_size < 1) fail("kv cache: block size ", block_size, " must be >= 1");
  return 2ull /* K and V */ * uint64_t(config.num_layers) * uint64_t(config.num_kv_heads) *
         uint64_t(config.head_dim) * uint64_t(block_size) * 2ull /* bf16 */;
}

int64_t cuda_kv_blocks_for_bytes(uint64_t budget_bytes, const ModelConfig& config, int32_t block_size) {
  const uint64_t per_block = cuda_kv_bytes_per_block(config, block_size);
  if (per_block == 0) fail("kv cache: the model has no KV values (layers, kv heads or head_dim is 0)");
  return int64_t(std::min<uint64_t>(budget_bytes / per_block, (1ull << 30) - 1));
}

uint64_t cuda_default_kv_budget(uint64_t free_bytes) { return uint64_t(double(free_bytes) * kCudaDefaultKvFraction); }

std::vector<int32_t> cuda_graph_buckets(int32_t max_seqs) {
  std::vector<int32_t> buckets;
  for (int32_t b = 1; b <= std::min(max_seqs, 256); b *= 2) buckets.push_back(b);
  if (max_seqs >= 1 && (buckets.empty() || buckets.back() != max_seqs)) buckets.push_back(max_seqs);
  return buckets;
}

int32_t cuda_pick_graph_bucket(const std::vector<int32_t>& buckets, int32_t num_seqs) {
  for (size_t i = 0; i < buckets.size(); ++i)
    if (buckets[i] >= num_seqs) return int32_t(i);
  return -1;
}

std::vector<int32_t> cuda_graph_widths(int32_t table_width, int32_t block_size) {
  std::vector<int32_t> widths;
  for (int64_t context = 512; context < int64_t(table_width) * block_size; context *= 4) {
    const int32_t w = int32_t((context + block_size - 1) / block_size);
    if (w < table_width && (widths.empty() || w > widths.back())) widths.push_back(w);
  }
  if (table_width >= 1) widths.push_back(table_width);
  return widths;
}

bool is_decode_only(const StepPlan& plan) {
  if (plan.num_seqs() == 0 || plan.num_tokens() != plan.num_seqs()) return false;
  if (plan.num_decode_seqs >= 0 && plan.num_decode_seqs < plan.num_seqs()) return false;  // one-token prefill chunks
  if (plan.logit_rows.size() != size_t(plan.num_seqs())) return false;
  for (int32_t s = 0; s < plan.num_seqs(); ++s)
    if (plan.cu_seqlens[size_t(s) + 1] - plan.cu_seqlens[size_t(s)] != 1) return false;
  return true;  // logit_rows are ascending and distinct (StepPlan::validate), so they are 0..n-1
}

StepLayout cuda_step_layout(int32_t num_tokens, int32_t num_seqs, int32_t table_width, int32_t num_logit_rows) {
  // Each array starts on a 16-byte boundary (4 int32), which the kernels' vector loads may rely on.
  auto up4 = [](int64_t n) { return (n + 3) / 4 * 4; };
  StepLayout l;
  int64_t at = 0;
  l.token_ids = at, at += up4(num_tokens);
  l.positions = at, at += up4(num_tokens);
  l.cu_seqlens = at, at += up4(int64_t(num_seqs) + 1);
  l.kv_lens = at, at += up4(num_seqs);
  l.block_table = at, at += up4(int64_t(num_seqs) * table_width);
  l.logit_rows = at, at += up4(num_logit_rows);
  l.total = at;
  return l;
}

CudaSampleLayout cuda_sample_layout(int32_t num_rows, size_t num_rep_ids, size_t num_freq_ids) {
  auto up16 = [](size_t n) { return (n + 15) / 16 * 16; };
  const size_t rows = size_t(std::max(num_rows, 0));
  CudaSampleLayout l;
  size_t at = 0;
  l.rows = at, at += up16(rows * sizeof(SampleRow));
  l.rep_offsets = at, at += up16((rows + 1) * 4);
  l.rep_ids = at, at += up16(num_rep_ids * 4);
  l.freq_offsets = at, at += up16((rows + 1) * 4);
  l.freq_ids = at, at += up16(num_freq_ids * 4);
  l.freq_counts = at, at += up16(num_freq_ids * 4);
  l.total = at;
  return l;
}

CudaSampleLayout cuda_pack_sample_batch(const cpu::SampleBatch& batch, uint8_t* dst, size_t dst_bytes) {
  const int32_t rows = batch.num_rows();
  for (int32_t r = 0; r < rows; ++r)
    if (std::string why = sample_row_error(batch.rows[size_t(r)]); !why.empty()) fail("row ", r, ": ", why);
  const cpu::PenaltyLists& pl = batch.penalties;
  auto consistent = [&](const std::vector<int32_t>& offsets, size_t ids) {
    if (offsets.size() != size_t(rows) + 1 || offsets.front() != 0 || size_t(offsets.back()) != ids) return false;
    for (size_t i = 1; i < offsets.size(); ++i)
      if (offsets[i] < offsets[i - 1]) return false;
    return true;
  };
  if (!consistent(pl.rep_offsets, pl.rep_ids.size()) || !consistent(pl.freq_offsets, pl.freq_ids.size()) ||
      pl.freq_counts.size() != pl.freq_ids.size())
    fail("sampling batch: the penalty lists do not describe its ", rows, " rows");
  const CudaSampleLayout l = cuda_sample_layout(rows, pl.rep_ids.size(), pl.freq_ids.size());
  if (l.total > dst_bytes) fail("sampling batch: ", l.total, " bytes do not fit the ", dst_bytes, " byte buffer");
  auto put = [&](size_t at, const void* src, size_t bytes) {
    if (bytes) std::memcpy(dst + at, src, bytes);
  };
  put(l.rows, batch.rows.data(), size_t(rows) * sizeof(SampleRow));
  put(l.rep_offsets, pl.rep_offsets.data(), pl.rep_offsets.size() * 4);
  put(l.rep_ids, pl.rep_ids.data(), pl.rep_ids.size() * 4);
  put(l.freq_offsets, pl.freq_offsets.data(), pl.freq_offsets.size() * 4);
  put(l.freq_ids, pl.freq_ids.data(), pl.freq_ids.size() * 4);
  put(l.freq_counts, pl.freq_counts.data(), pl.freq_counts.size() * 4);
  return l;
}

int64_t cuda_l2_prefetch_budget(const char* env, int64_t l2_bytes) {
  const std::optional<int64_t> budget = parse_l2_budget(env, std::max<int64_t>(l2_bytes, 0) / 4 * 3);
  if (!budget) fail("FLINT_L2_PREFETCH = \"", env, "\": expected on, off, or a budget in MiB from 1 to 4096");
  return *budget;
}

SampleParams cuda_sample_params(const CudaSampleLayout& layout, int32_t num_rows, uint8_t* base, float* logits,
                                int32_t vocab, int32_t* token_ids, float* maybe_logprobs) {
  auto at = [&](size_t offset) { return reinterpret_cast<int32_t*>(base + offset); };
  SampleParams p;
  p.num_rows = num_rows;
  p.vocab = vocab;
  p.logits = logits;
  p.ld_logits = vocab;
  p.rows = reinterpret_cast<const SampleRow*>(base + layout.rows);
  p.maybe_rep_offsets = at(layout.rep_offsets);
  p.rep_ids = at(layout.rep_ids);
  p.maybe_freq_offsets = at(layout.freq_offsets);
  p.freq_ids = at(layout.freq_ids);
  p.freq_counts = at(layout.freq_counts);
  p.token_ids = token_ids;
  p.maybe_logprobs = maybe_logprobs;
  return p;
}

StepMaxima cuda_fill_staging(const StepPlan& plan, const StepLayout& layout, int32_t table_width, int32_t pad_to_seqs,
                             int32_t* staging) {
  const int32_t n = plan.num_tokens(), s = plan.num_seqs();
  if (plan.max_blocks_per_seq > table_width)
    fail("cuda backend: a sequence spans ", plan.max_blocks_per_seq, " KV blocks, more than the ", table_width,
         " the block table holds (the model's context, or the KV cache when smaller)");
  const bool pad = pad_to_seqs > s;
  if (pad && s > 0 && !is_decode_only(plan)) fail("cuda backend: only a decode-only step is padded to a graph bucket");
  StepMaxima m;
  std::copy(plan.token_ids.begin(), plan.token_ids.end(), staging + layout.token_ids);
  std::copy(plan.positions.begin(), plan.positions.end(), staging + layout.positions);
  std::copy(plan.cu_seqlens.begin(), plan.cu_seqlens.end(), staging + layout.cu_seqlens);
  if (plan.cu_seqlens.empty()) staging[layout.cu_seqlens] = 0;  // an empty plan: all rows padding (graph capture)
  std::copy(plan.kv_lens.begin(), plan.kv_lens.end(), staging + layout.kv_lens);
  for (int32_t i = 0; i < s; ++i) {
    m.max_kv_len = std::max(m.max_kv_len, plan.kv_lens[size_t(i)]);
    m.max_q_len = std::max(m.max_q_len, plan.cu_seqlens[size_t(i) + 1] - plan.cu_seqlens[size_t(i)]);
    int32_t* row = staging + layout.block_table + int64_t(i) * table_width;
    for (int32_t j = 0; j < table_width; ++j)
      row[j] = j < plan.max_blocks_per_seq ? plan.block_table[size_t(i) * size_t(plan.max_blocks_per_seq) + size_t(j)]
                                           : 0;
  }
  if (!pad) {
    std::copy(plan.logit_rows.begin(), plan.logit_rows.end(), staging + layout.logit_rows);
    return m;
  }
  for (int32_t i = s; i < pad_to_seqs; ++i) {  // padding: one token at position -1, kv_len 0
    staging[layout.token_ids + i] = 0;
    staging[layout.positions + i] = -1;
    staging[layout.cu_seqlens + i + 1] = n + (i - s) + 1;
    staging[layout.kv_lens + i] = 0;
    std::fill_n(staging + layout.block_table + int64_t(i) * table_width, table_width, 0);
  }
  for (int32_t i = 0; i < pad_to_seqs; ++i) staging[layout.logit_rows + i] = i;
  return m;
}

StepShape cuda_prepare_step(const StepPlan& plan, int32_t bucket_size, int32_t table_width, int32_t block_size,
                            int32_t* staging, int64_t* elems) {
  StepShape sh;
  StepLayout layout;
  if (bucket_size > 0) {
    if (plan.num_seqs() > bucket_size) fail("cuda backend: ", plan.num_seqs(), " sequences in a bucket of ", bucket_size);
    layout = cuda_step_layout(bucket_size, bucket_size, table_width, bucket_size);
    cuda_fill_staging(plan, layout, table_width, bucket_size, staging);
    sh.num_tokens = sh.num_seqs = sh.num_logit_rows = bucket_size;
    sh.table_width = table_width;
    sh.max_q_len = 1;
    sh.max_kv_len = table_width * block_size;
  } else {
    const int32_t width = std::max(plan.max_blocks_per_seq, 1);
    layout = cuda_step_layout(plan.num_tokens(), plan.num_seqs(), width, int32_t(plan.logit_rows.size()));
    const StepMaxima m = cuda_fill_staging(plan, layout, width, 0, staging);
    sh.num_tokens = plan.num_tokens();
    sh.num_seqs = plan.num_seqs();
    sh.num_logit_rows = int32_t(plan.logit_rows.size());
    sh.table_width = width;
    sh.max_q_len = m.max_q_len;
    sh.max_kv_len = m.max_kv_len;
    sh.num_decode_seqs = plan.num_decode_seqs;
  }
  sh.token_ids = layout.token_ids, sh.positions = layout.positions, sh.cu_seqlens = layout.cu_seqlens;
  sh.kv_lens = layout.kv_lens, sh.block_table = layout.block_table, sh.logit_rows = layout.logit_rows;
  *elems = layout.total;
  return sh;
}

PackedWeight pack_qkv(const LayerWeights& lw, const ModelConfig& c) {
  const int64_t nq = int64_t(c.num_qo_heads) * c.head_dim, nkv = int64_t(c.num_kv_heads) * c.head_dim;
  PackedWeight w{nq + 2 * nkv, c.hidden_size, {}};
  w.pieces = {{lw.wq, 1, 0, 1}, {lw.wk, 1, nq, 1}, {lw.wv, 1, nq + nkv, 1}};
  return w;
}

PackedWeight pack_qkv_bias(const LayerWeights& lw, const ModelConfig& c) {
  const int64_t nq = int64_t(c.num_qo_heads) * c.head_dim, nkv = int64_t(c.num_kv_heads) * c.head_dim;
  if (!lw.maybe_bq && !lw.maybe_bk && !lw.maybe_bv) return {};
  if (!lw.maybe_bq || !lw.maybe_bk || !lw.maybe_bv)
    fail("cuda backend: a layer has some of the q, k, v biases but not all three (the Qkv epilogue takes one bias)");
  // One row of nq + 2 nkv values; for a one-row packed weight a piece's first_row is its first column
  // (pack_piece_params).
  PackedWeight w{1, nq + 2 * nkv, {}};
  w.pieces = {{lw.maybe_bq, 1, 0, 0}, {lw.maybe_bk, 1, nq, 0}, {lw.maybe_bv, 1, nq + nkv, 0}};
  return w;
}

PackedWeight pack_gate_up(const LayerWeights& lw, const ModelConfig& c) {
  const int64_t ffn = c.ffn_size;
  if (ffn % 8 != 0) fail("cuda backend: ffn size ", ffn, " must be a multiple of 8 (the gate/up interleave)");
  PackedWeight w{2 * ffn, c.hidden_size, {}};
  // Group g = gate rows 8g..8g+7 -> packed rows 16g..16g+7 = gate_up_row(8g, false); up likewise at +8.
  w.pieces = {{lw.w_gate, 8, gate_up_row(0, false), 16}, {lw.w_up, 8, gate_up_row(0, true), 16}};
  return w;
}

PackedWeight pack_plain(const Tensor& t) { return PackedWeight{t.rows(), t.cols(), {{&t, 1, 0, 1}}}; }

DequantParams pack_piece_params(const PackedWeight& w, const PackPiece& piece, const void* src, bf16_bits* dst) {
  const Tensor& t = *piece.src;
  DequantParams p;
  p.type = t.dtype;
  p.src = src;
  if (w.rows == 1) {  // a vector: one row of t.numel() values at column first_row
    if (piece.first_row + t.numel() > w.cols)
      fail("cuda backend: ", t.name, " (", t.numel(), " values) does not fit at column ", piece.first_row, " of ", w.cols);
    p.num_rows = 1;
    p.row_elems = t.numel();
    p.src_row_bytes = t.nbytes;
    p.dst = dst + piece.first_row;
    p.ld_dst = t.numel();
    return p;
  }
  if (t.cols() != w.cols) fail("cuda backend: ", t.name, " has ", t.cols(), " columns, the packed weight ", w.cols);
  if (t.rows() % piece.group_rows != 0)
    fail("cuda backend: ", t.name, ": ", t.rows(), " rows are not whole groups of ", piece.group_rows);
  const int64_t groups = t.rows() / piece.group_rows;
  if (piece.first_row + (groups - 1) * piece.group_stride + piece.group_rows > w.rows)
    fail("cuda backend: ", t.name, " overruns the packed weight's ", w.rows, " rows");
  p.num_rows = groups;
  p.row_elems = piece.group_rows * t.cols();
  p.src_row_bytes = uint64_t(piece.group_rows) * t.row_bytes();
  p.dst = dst + piece.first_row * w.cols;
  p.ld_dst = piece.group_stride * w.cols;
  return p;
}

}  // namespace flint
