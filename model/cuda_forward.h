// The CUDA backend's forward pass as one sequence of kernel calls over the kernels' param structs, written once
// and run by two executors: CudaBackend (Ops = the CUDA launchers on its stream, device pointers) and TwinBackend
// (Ops = the kernels' CPU twins, host pointers; model/twin_backend.h), so the wiring of every call (shapes,
// strides, the packed weights, the staging arrays, the padding rows) is exercised on a machine without a GPU.
//
//   x (fp32) = embedding(ids); proj (fp32): the O and down matmuls' output, added to x unrounded
//   per layer:  h = add_rmsnorm(x += proj, attn_norm)      (layer 0: no add)
//               (proj may be left as the O or down matmul's split-K partial sums, which add_rmsnorm then adds)
//               q | k | v = matmul(Wqkv, h) (Qkv epilogue, + bias);  rope_write_kv (q in place, k/v to the cache)
//               (or the QKV matmul's split-K partial sums, which rope_write_kv finishes: sum, bias, bf16)
//               attn = paged_attention(q);  proj = matmul(Wo, attn)
//               h = add_rmsnorm(x += proj, ffn_norm);  act = matmul(Wgate|up, h) (SiluMul);  proj = matmul(Wdown, act)
//   rows that sample: add_rmsnorm(x + proj, output_norm) on those rows (row ids; proj may be the down matmul's
//               partial sums); logits = matmul(Wout) in fp32
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/attention_params.h"
#include "kernels/ops_params.h"
#include "model/config.h"

namespace flint {

struct ForwardLayer {  // a layer's packed bf16 weights and its KV cache
  const bf16_bits *qkv = nullptr, *maybe_qkv_bias = nullptr, *wo = nullptr, *gate_up = nullptr, *down = nullptr;
  const bf16_bits *attn_norm = nullptr, *ffn_norm = nullptr, *maybe_q_norm = nullptr, *maybe_k_norm = nullptr;
  PagedKvCache cache;
};

struct ForwardBuffers {  // activations (max tokens rows) and the logit rows' buffers (max logit rows)
  float* x = nullptr;
  bf16_bits *h = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *attn = nullptr, *act = nullptr;
  float* proj = nullptr;
  bf16_bits* gh = nullptr;  // the final norm's rows (max logit rows)
  float* logits = nullptr;
  void* matmul_ws = nullptr;
  size_t matmul_ws_bytes = 0;
  void* attn_ws = nullptr;
  size_t attn_ws_bytes = 0;
  int32_t* attn_counters = nullptr;  // the decode kernel's split counters (AttentionParams::split_counters)
  size_t num_attn_counters = 0;
  const int32_t* staging = nullptr;  // the step's index arrays (cuda_step_layout)
  const bf16_bits *tok_embd = nullptr, *output = nullptr, *output_norm = nullptr;
  const float* inv_freq = nullptr;
  // L2 prefetch of the next matmul's weights (MatmulParams::maybe_l2_prefetch): a matmul asks for its successor's
  // weights when the two weights together are at most this many bytes (0: never; cuda_l2_prefetch_budget).
  int64_t l2_prefetch_budget = 0;
};

// What one forward pass covers: where its index arrays are in the staging buffer, and the attention maxima.
struct StepShape {
  int32_t num_tokens = 0, num_seqs = 0, num_logit_rows = 0, table_width = 0;
  int32_t max_q_len = 0, max_kv_len = 0;
  int32_t num_decode_seqs = -1;  // StepPlan::num_decode_seqs (-1 in a graph: every sequence a decode)
  int64_t token_ids = 0, positions = 0, cu_seqlens = 0, kv_lens = 0, block_table = 0, logit_rows = 0;
};

// Ops provides: embedding, add_rmsnorm, matmul (returning how many partial sums it left in the workspace for a
// leave_partials call, 0 when it wrote y), rope_write_kv, paged_attention (each taking the
// param struct and a name for errors); observing(); observe(name, ptr, is_bf16, rows, cols);
// observe_kv(name, layer, is_v); observe_sum(name, x_f32, delta_f32, rows, cols) (x + delta, the last
// layer's out, which the fused norm never materialises).
template <class Ops>
void run_forward(const ModelConfig& c, const std::vector<ForwardLayer>& layers, const ForwardBuffers& B,
                 const StepShape& sh, Ops& ops) {
  const int32_t n = sh.num_tokens, hidden = c.hidden_size, ffn = c.ffn_size, hd = c.head_dim;
  const int32_t nq = c.num_qo_heads * hd, nkv = c.num_kv_heads * hd;
  const int32_t* d = B.staging;
  auto lname = [](int l, const char* what) { return "layer." + std::to_string(l) + "." + what; };

  EmbeddingParams emb;
  emb.num_tokens = n;
  emb.ids = d + sh.token_ids;
  emb.vocab = c.vocab_size;
  emb.hidden = hidden;
  emb.table = B.tok_embd;
  emb.ld_table = hidden;
  emb.out_type = ActType::F32;
  emb.out = B.x;
  emb.ld_out = hidden;
  ops.embedding(emb, "embedding");
  if (ops.observing()) ops.observe("embedding", B.x, false, n, hidden);

  AttentionBatch batch;
  batch.cu_seqlens = d + sh.cu_seqlens;
  batch.kv_lens = d + sh.kv_lens;
  batch.block_table = d + sh.block_table;
  batch.max_blocks_per_seq = sh.table_width;
  batch.positions = d + sh.positions;
  batch.num_seqs = sh.num_seqs;
  batch.num_tokens = n;
  batch.max_q_len = sh.max_q_len;
  batch.max_kv_len = sh.max_kv_len;
  batch.decode_seqs = sh.num_decode_seqs;

  // The residual's delta: nothing (layer 0), or the last O / down projection: B.proj, or the `splits` partial sums
  // its matmul left in the workspace (the reduction fused into the norm).
  struct Delta {
    const float* data = nullptr;
    int splits = 1;
  };
  auto norm = [&](Delta delta, const bf16_bits* w, const char* what) {
    AddRmsNormParams p;
    p.num_rows = n;
    p.hidden = hidden;
    p.x = B.x;
    p.ldx = hidden;
    p.maybe_delta = delta.data;
    p.ld_delta = hidden;
    p.delta_splits = delta.splits;
    p.ld_split = int64_t(n) * hidden;
    p.w = w;
    p.out = B.h;
    p.ld_out = hidden;
    p.eps = c.rms_eps;
    ops.add_rmsnorm(p, what);
  };
  auto matmul = [&](MatmulParams p, const char* what) {
    p.workspace = B.matmul_ws;
    p.workspace_bytes = B.matmul_ws_bytes;
    return ops.matmul(p, what);
  };
  // The matmul's weights prefetched into L2 by the matmul before it, when both fit the budget together: at batch 1
  // a small matrix (QKV, O) then reads from L2 while the larger one before it streams from HBM.
  auto prefetch_next = [&](MatmulParams& p, const bf16_bits* next_w, int64_t next_rows, int64_t next_cols) {
    const int64_t bytes = next_rows * next_cols * 2 / 16 * 16, own = int64_t(p.N) * p.K * 2;
    if (B.l2_prefetch_budget <= 0 || bytes < 16 || own + bytes > B.l2_prefetch_budget) return;
    if (reinterpret_cast<uintptr_t>(next_w) % 16 != 0) return;
    p.maybe_l2_prefetch = next_w, p.l2_prefetch_bytes = bytes;
  };
  // A projection into the residual (hidden columns, fp32): its partial sums may stay in the workspace for the next
  // norm to add (the last layer's: the final norm, on the rows that sample).
  auto project = [&](MatmulParams p, bool may_leave_partials, const char* what) {
    p.out_type = MatmulOut::F32;
    p.y = B.proj, p.ldy = hidden;
    p.leave_partials = may_leave_partials;
    const int splits = matmul(p, what);
    return splits > 0 ? Delta{static_cast<const float*>(B.matmul_ws), splits} : Delta{B.proj, 1};
  };
  Delta proj;  // the previous layer's MLP output, for the next attention norm

  for (int l = 0; l < c.num_layers; ++l) {
    const ForwardLayer& L = layers[size_t(l)];
    // x += proj (the previous layer's MLP output) fused with this layer's first norm.
    norm(l == 0 ? Delta{} : proj, L.attn_norm, "attention norm");
    if (ops.observing() && l > 0) ops.observe(lname(l - 1, "out"), B.x, false, n, hidden);
    MatmulParams qkv;
    qkv.M = n, qkv.N = nq + 2 * nkv, qkv.K = hidden;
    qkv.x = B.h, qkv.ldx = hidden, qkv.w = L.qkv, qkv.ldw = hidden, qkv.maybe_bias = L.maybe_qkv_bias;
    qkv.epilogue = MatmulEpilogue::Qkv;
    qkv.y = B.q, qkv.ldy = nq, qkv.num_q = nq, qkv.num_kv = nkv;
    qkv.k_out = B.k, qkv.ld_k = nkv, qkv.v_out = B.v, qkv.ld_v = nkv;
    qkv.leave_partials = true;  // when K is split, rope_write_kv adds the partial sums (and the bias)
    prefetch_next(qkv, L.wo, hidden, nq);
    const int qkv_splits = matmul(qkv, "qkv matmul");

    RopeKvParams rope;
    rope.cache = L.cache;
    rope.batch = batch;
    rope.q = B.q, rope.ld_q = nq, rope.k = B.k, rope.ld_k = nkv, rope.v = B.v, rope.ld_v = nkv;
    rope.num_qo_heads = c.num_qo_heads;
    rope.inv_freq = B.inv_freq;
    rope.style = c.rope_style;
    rope.maybe_q_norm = L.maybe_q_norm;
    rope.maybe_k_norm = L.maybe_k_norm;
    rope.norm_eps = c.rms_eps;
    if (qkv_splits > 0) {
      rope.maybe_qkv_partials = static_cast<const float*>(B.matmul_ws);
      rope.qkv_splits = qkv_splits;
      rope.maybe_qkv_bias = L.maybe_qkv_bias;
    }
    ops.rope_write_kv(rope, "rope_write_kv");
    if (ops.observing()) {
      ops.observe(lname(l, "q"), B.q, true, n, nq);
      ops.observe_kv(lname(l, "k"), l, false);
      ops.observe_kv(lname(l, "v"), l, true);
    }

    AttentionParams attn;
    attn.cache = L.cache;
    attn.batch = batch;
    attn.q = B.q, attn.ld_q = nq, attn.out = B.attn, attn.ld_out = nq;
    attn.num_qo_heads = c.num_qo_heads;
    attn.scale = 1.0f / std::sqrt(float(hd));
    attn.workspace = B.attn_ws, attn.workspace_bytes = B.attn_ws_bytes;
    attn.split_counters = B.attn_counters, attn.num_split_counters = B.num_attn_counters;
    ops.paged_attention(attn, "paged_attention");
    if (ops.observing()) ops.observe(lname(l, "attn"), B.attn, true, n, nq);

    MatmulParams wo;
    wo.M = n, wo.N = hidden, wo.K = nq;
    wo.x = B.attn, wo.ldx = nq, wo.w = L.wo, wo.ldw = nq;
    prefetch_next(wo, L.gate_up, 2 * int64_t(ffn), hidden);
    proj = project(wo, true, "attention output matmul");

    // x += proj fused with the MLP norm; then silu(gate) · up in the gate+up matmul's epilogue.
    norm(proj, L.ffn_norm, "mlp norm");
    if (ops.observing()) ops.observe(lname(l, "attn_residual"), B.x, false, n, hidden);
    MatmulParams gu;
    gu.M = n, gu.N = 2 * ffn, gu.K = hidden;
    gu.x = B.h, gu.ldx = hidden, gu.w = L.gate_up, gu.ldw = hidden;
    gu.epilogue = MatmulEpilogue::SiluMul;
    gu.y = B.act, gu.ldy = ffn;
    prefetch_next(gu, L.down, hidden, ffn);
    matmul(gu, "gate+up matmul");
    MatmulParams down;
    down.M = n, down.N = hidden, down.K = ffn;
    down.x = B.act, down.ldx = ffn, down.w = L.down, down.ldw = ffn;
    if (l + 1 < c.num_layers) prefetch_next(down, layers[size_t(l) + 1].qkv, nq + 2 * int64_t(nkv), hidden);
    else if (sh.num_logit_rows > 0) prefetch_next(down, B.output, c.vocab_size, hidden);
    // The last layer's partial sums stay in the workspace too (the final norm adds them for the rows that sample),
    // except when observing: the per-layer diff reads the last layer's output from B.proj.
    proj = project(down, l + 1 < c.num_layers || !ops.observing(), "down matmul");
  }
  if (ops.observing()) ops.observe_sum(lname(c.num_layers - 1, "out"), B.x, B.proj, n, hidden);

  // Logits only for the rows that sample: the final norm of x + the last projection on those rows (gathered by the
  // norm itself), then the LM head.
  const int32_t rows = sh.num_logit_rows;
  if (rows == 0) return;
  AddRmsNormParams fn;
  fn.num_rows = rows;
  fn.hidden = hidden;
  fn.maybe_row_ids = d + sh.logit_rows, fn.num_src_rows = n;
  fn.x = B.x, fn.ldx = hidden, fn.maybe_delta = proj.data, fn.ld_delta = hidden;
  fn.delta_splits = proj.splits, fn.ld_split = int64_t(n) * hidden;
  fn.w = B.output_norm, fn.out = B.gh, fn.ld_out = hidden, fn.eps = c.rms_eps;
  ops.add_rmsnorm(fn, "final norm");
  if (ops.observing()) ops.observe("final_norm", B.gh, true, rows, hidden);
  MatmulParams head;
  head.M = rows, head.N = c.vocab_size, head.K = hidden;
  head.x = B.gh, head.ldx = hidden, head.w = B.output, head.ldw = hidden;
  head.out_type = MatmulOut::F32;
  head.y = B.logits, head.ldy = c.vocab_size;
  matmul(head, "lm head");
}

}  // namespace flint
