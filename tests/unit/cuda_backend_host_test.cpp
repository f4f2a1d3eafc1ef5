// The CUDA backend's host-side arithmetic (model/cuda_backend_host.h), which runs on any machine: the KV budget,
// the graph buckets, the step's staging layout and padding, and the weight packing, the last checked by running
// the packed weights through the bf16 matmul's CPU twin (the arithmetic the CUDA kernels share) against the
// unpacked q/k/v and gate/up weights of real model files.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "kernels/bf16.h"
#include "kernels/cpu/matmul_bf16.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/sampling.h"
#include "model/cuda_backend_host.h"
#include "model/model_loader.h"
#include "test_util.h"

namespace flint {
namespace {

ModelConfig smol_shape() {  // SmolLM2-135M: 30 layers, 3 kv heads of 64
  ModelConfig c;
  c.num_layers = 30, c.num_kv_heads = 3, c.head_dim = 64, c.num_qo_heads = 9, c.hidden_size = 576;
  return c;
}

TEST(CudaKvBudget, BlocksFromBytes) {
  const ModelConfig c = smol_shape();
  // 2 (K, V) x 30 layers x 3 heads x 64 dims x 16 tokens x 2 bytes = 368,640 bytes per block.
  EXPECT_EQ(cuda_kv_bytes_per_block(c, 16), 368640u);
  EXPECT_EQ(cuda_kv_blocks_for_bytes(368640u * 100, c, 16), 100);
  EXPECT_EQ(cuda_kv_blocks_for_bytes(368640u * 100 - 1, c, 16), 99);  // whole blocks only
  EXPECT_EQ(cuda_kv_blocks_for_bytes(368639u, c, 16), 0);
  EXPECT_EQ(cuda_kv_blocks_for_bytes(1ull << 62, c, 16), (1 << 30) - 1);  // capped, no overflow
  EXPECT_EQ(cuda_kv_blocks_for_bytes(368640u * 2, c, 32), 1);             // twice the tokens per block
  test::expect_error([&] { cuda_kv_bytes_per_block(c, 0); }, {"block size 0"});
}

TEST(CudaKvBudget, DefaultIsFortyPercentOfFree) {
  EXPECT_EQ(cuda_default_kv_budget(80ull << 30), uint64_t(0.4 * double(80ull << 30)));
  EXPECT_EQ(cuda_default_kv_budget(0), 0u);
}

TEST(CudaL2Prefetch, BudgetFromTheEnvironment) {
  const int64_t l2 = int64_t(60) << 20;
  EXPECT_EQ(cuda_l2_prefetch_budget(nullptr, l2), 0);
  EXPECT_EQ(cuda_l2_prefetch_budget("", l2), 0);
  EXPECT_EQ(cuda_l2_prefetch_budget("off", l2), 0);
  EXPECT_EQ(cuda_l2_prefetch_budget("0", l2), 0);
  EXPECT_EQ(cuda_l2_prefetch_budget("on", l2), int64_t(45) << 20);  // three quarters of L2
  EXPECT_EQ(cuda_l2_prefetch_budget("on", 0), 0);
  EXPECT_EQ(cuda_l2_prefetch_budget("24", l2), int64_t(24) << 20);   // MiB, whatever the L2
  for (const char* bad : {"yes", "24MB", "-3", "5000", " 8"})
    test::expect_error([&] { cuda_l2_prefetch_budget(bad, l2); }, {"FLINT_L2_PREFETCH", bad});
}

TEST(CudaGraphBuckets, PowersOfTwoUpToTheMaxAndTheMaxItself) {
  EXPECT_EQ(cuda_graph_buckets(1), (std::vector<int32_t>{1}));
  EXPECT_EQ(cuda_graph_buckets(64), (std::vector<int32_t>{1, 2, 4, 8, 16, 32, 64}));
  EXPECT_EQ(cuda_graph_buckets(100), (std::vector<int32_t>{1, 2, 4, 8, 16, 32, 64, 100}));
  EXPECT_EQ(cuda_graph_buckets(256), (std::vector<int32_t>{1, 2, 4, 8, 16, 32, 64, 128, 256}));
  EXPECT_EQ(cuda_graph_buckets(1000), (std::vector<int32_t>{1, 2, 4, 8, 16, 32, 64, 128, 256, 1000}));
}

TEST(CudaGraphWidths, ContextsOf512TimesPowersOfFourThenTheWholeTable) {
  EXPECT_EQ(cuda_graph_widths(512, 16), (std::vector<int32_t>{32, 128, 512}));       // 8192 tokens
  EXPECT_EQ(cuda_graph_widths(8192, 16), (std::vector<int32_t>{32, 128, 512, 2048, 8192}));  // 131072
  EXPECT_EQ(cuda_graph_widths(2048, 16), (std::vector<int32_t>{32, 128, 512, 2048}));  // 32768: no 8192
  EXPECT_EQ(cuda_graph_widths(12, 16), (std::vector<int32_t>{12}));                   // under 512 tokens
  EXPECT_EQ(cuda_graph_widths(33, 16), (std::vector<int32_t>{32, 33}));
  EXPECT_EQ(cuda_graph_widths(100, 7), (std::vector<int32_t>{74, 100}));              // ceil(512 / 7)
  EXPECT_EQ(cuda_graph_widths(1, 16), (std::vector<int32_t>{1}));
  // Every width a decode step can need has a graph: the last is the whole table.
  for (int32_t w : {1, 5, 32, 33, 511, 512}) {
    const std::vector<int32_t> widths = cuda_graph_widths(512, 16);
    const int32_t i = cuda_pick_graph_bucket(widths, w);
    ASSERT_GE(i, 0) << w;
    EXPECT_GE(widths[size_t(i)], w);
    if (i > 0) {
      EXPECT_LT(widths[size_t(i) - 1], w);
    }
  }
}

TEST(CudaGraphBuckets, PicksTheSmallestThatHolds) {
  const std::vector<int32_t> b = cuda_graph_buckets(100);
  EXPECT_EQ(cuda_pick_graph_bucket(b, 1), 0);
  EXPECT_EQ(b[size_t(cuda_pick_graph_bucket(b, 3))], 4);
  EXPECT_EQ(b[size_t(cuda_pick_graph_bucket(b, 64))], 64);
  EXPECT_EQ(b[size_t(cuda_pick_graph_bucket(b, 65))], 100);
  EXPECT_EQ(cuda_pick_graph_bucket(b, 101), -1);
}

StepPlan decode_plan(int32_t num_seqs) {
  StepPlan p;
  for (int32_t s = 0; s < num_seqs; ++s) p.add_sequence({100 + s}, 17 + 5 * s, {3 * s, 3 * s + 1, 3 * s + 2}, true);
  return p;
}

TEST(CudaStaging, DecodeOnlyIsOneTokenPerSequenceWithItsLogits) {
  EXPECT_TRUE(is_decode_only(decode_plan(3)));
  StepPlan prefill;
  prefill.add_sequence({1, 2, 3}, 3, {0}, true);
  EXPECT_FALSE(is_decode_only(prefill));
  StepPlan mixed = decode_plan(2);
  mixed.add_sequence({5, 6}, 2, {9}, true);
  EXPECT_FALSE(is_decode_only(mixed));
  StepPlan no_logits;
  no_logits.add_sequence({1}, 4, {0}, false);
  EXPECT_FALSE(is_decode_only(no_logits));
  EXPECT_FALSE(is_decode_only(StepPlan{}));
  StepPlan one_token_chunk = decode_plan(3);  // the last sequence is a prompt's one-token chunk: no graph
  one_token_chunk.num_decode_seqs = 2;
  EXPECT_FALSE(is_decode_only(one_token_chunk));
  one_token_chunk.num_decode_seqs = 3;
  EXPECT_TRUE(is_decode_only(one_token_chunk));
}

TEST(CudaStaging, LayoutIsAlignedAndDisjoint) {
  const StepLayout l = cuda_step_layout(5, 3, 7, 2);
  for (int64_t off : {l.token_ids, l.positions, l.cu_seqlens, l.kv_lens, l.block_table, l.logit_rows})
    EXPECT_EQ(off % 4, 0) << off;  // 16-byte boundaries
  EXPECT_GE(l.positions - l.token_ids, 5);
  EXPECT_GE(l.kv_lens - l.cu_seqlens, 4);
  EXPECT_GE(l.logit_rows - l.block_table, 21);
  EXPECT_GE(l.total - l.logit_rows, 2);
}

TEST(CudaStaging, EagerStepCopiesThePlanAndWidensTheTable) {
  StepPlan p;
  p.add_sequence({11, 12, 13}, 5, {4}, false);   // 3 new tokens on a cached prefix of 2
  p.add_sequence({21}, 20, {7, 8}, true);
  const int32_t width = 4;
  const StepLayout l = cuda_step_layout(p.num_tokens(), p.num_seqs(), width, 1);
  std::vector<int32_t> st(size_t(l.total), -777);
  const StepMaxima m = cuda_fill_staging(p, l, width, 0, st.data());
  EXPECT_EQ(m.max_kv_len, 20);
  EXPECT_EQ(m.max_q_len, 3);
  EXPECT_EQ(std::vector<int32_t>(st.begin() + l.token_ids, st.begin() + l.token_ids + 4), (std::vector<int32_t>{11, 12, 13, 21}));
  EXPECT_EQ(std::vector<int32_t>(st.begin() + l.positions, st.begin() + l.positions + 4), (std::vector<int32_t>{2, 3, 4, 19}));
  EXPECT_EQ(std::vector<int32_t>(st.begin() + l.cu_seqlens, st.begin() + l.cu_seqlens + 3), (std::vector<int32_t>{0, 3, 4}));
  EXPECT_EQ(std::vector<int32_t>(st.begin() + l.kv_lens, st.begin() + l.kv_lens + 2), (std::vector<int32_t>{5, 20}));
  EXPECT_EQ(std::vector<int32_t>(st.begin() + l.block_table, st.begin() + l.block_table + 8),
            (std::vector<int32_t>{4, 0, 0, 0, 7, 8, 0, 0}));
  EXPECT_EQ(st[size_t(l.logit_rows)], 3);
  test::expect_error([&] { cuda_fill_staging(p, l, 1, 0, st.data()); }, {"2 KV blocks", "more than the 1 the block table holds"});
  test::expect_error([&] { cuda_fill_staging(p, cuda_step_layout(4, 4, width, 4), width, 4, st.data()); },
                     {"only a decode-only step is padded"});
}

TEST(CudaStaging, GraphBucketPadsWithSequencesThatTouchNothing) {
  const StepPlan p = decode_plan(3);
  const int32_t width = 5, b = 8;
  const StepLayout l = cuda_step_layout(b, b, width, b);
  std::vector<int32_t> st(size_t(l.total), -777);
  cuda_fill_staging(p, l, width, b, st.data());
  for (int32_t i = 0; i < b; ++i) {
    const bool real = i < 3;
    EXPECT_EQ(st[size_t(l.token_ids + i)], real ? 100 + i : 0);
    EXPECT_EQ(st[size_t(l.positions + i)], real ? 17 + 5 * i - 1 : -1);  // padding: position -1 ...
    EXPECT_EQ(st[size_t(l.kv_lens + i)], real ? 17 + 5 * i : 0);          // ... and kv_len 0
    EXPECT_EQ(st[size_t(l.cu_seqlens + i + 1)], i + 1);
    EXPECT_EQ(st[size_t(l.logit_rows + i)], i);
    EXPECT_EQ(st[size_t(l.block_table + int64_t(i) * width)], real ? 3 * i : 0);
  }
  EXPECT_EQ(st[size_t(l.cu_seqlens)], 0);
  // The capture's inputs: an empty plan, all padding.
  std::vector<int32_t> cap(size_t(l.total), -777);
  cuda_fill_staging(StepPlan{}, l, width, b, cap.data());
  for (int32_t i = 0; i < b; ++i) EXPECT_EQ(cap[size_t(l.kv_lens + i)], 0);
  EXPECT_EQ(cap[size_t(l.cu_seqlens)], 0);
  EXPECT_EQ(cap[size_t(l.cu_seqlens + b)], b);
}

// ---- Weight packing, through the matmul twin.

// What cuda::dequantize does with p, on the host (kernels/ops_params.h: f32_to_bf16 of dequantize_row, row by row).
void dequantize_on_host(const DequantParams& p) {
  std::vector<float> row(size_t(p.row_elems));
  for (int64_t r = 0; r < p.num_rows; ++r) {
    cpu::dequantize_row(p.type, static_cast<const uint8_t*>(p.src) + uint64_t(r) * p.src_row_bytes, row.data(), p.row_elems);
    for (int64_t i = 0; i < p.row_elems; ++i) p.dst[r * p.ld_dst + i] = f32_to_bf16_bits(row[size_t(i)]);
  }
}

std::vector<bf16_bits> pack_on_host(const PackedWeight& w) {
  std::vector<bf16_bits> out(size_t(w.rows * w.cols), 0xFFFF);  // NaN: an unwritten element shows
  for (const PackPiece& piece : w.pieces) dequantize_on_host(pack_piece_params(w, piece, piece.src->data, out.data()));
  return out;
}

// Row r of a tensor as bf16 values in fp64 (the packed weight's values exactly).
std::vector<double> row_bf16(const Tensor& t, int64_t r) {
  std::vector<float> f(size_t(t.cols()));
  cpu::dequantize_row(t.dtype, t.data + uint64_t(r) * t.row_bytes(), f.data(), t.cols());
  std::vector<double> d(f.size());
  for (size_t i = 0; i < f.size(); ++i) d[i] = bf16_bits_to_f32(f32_to_bf16_bits(f[i]));
  return d;
}

std::vector<double> vec_bf16(const Tensor* t) {
  if (!t) return {};
  return row_bf16(*t, 0);
}

double dot(const std::vector<bf16_bits>& x, int64_t m, const std::vector<double>& w) {
  double s = 0;
  for (size_t k = 0; k < w.size(); ++k) s += double(bf16_bits_to_f32(x[size_t(m) * w.size() + k])) * w[k];
  return s;
}

std::vector<bf16_bits> random_x(int64_t m, int64_t k) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<bf16_bits> x(size_t(m * k));
  for (auto& v : x) v = f32_to_bf16_bits(u(rng));
  return x;
}

// |got - want| within fp32 summation of bf16 products (relative to Σ|products|) plus one bf16 rounding of the output.
void expect_close(float got, double want, double abs_sum, const std::string& what) {
  EXPECT_LE(std::fabs(double(got) - want), 1e-5 * abs_sum + std::fabs(want) * (1.0 / 128)) << what;
}

void check_layer_packing(const LoadedModel& model, int layer) {
  const ModelConfig& c = model.config;
  const LayerWeights& lw = model.weights.layers[size_t(layer)];
  const int64_t M = 3, K = c.hidden_size, nq = int64_t(c.num_qo_heads) * c.head_dim, nkv = int64_t(c.num_kv_heads) * c.head_dim;
  const std::vector<bf16_bits> x = random_x(M, K);

  // QKV: one matmul with the Qkv epilogue over the packed weight (and bias) against each of wq, wk, wv alone.
  const PackedWeight qkv = pack_qkv(lw, c);
  ASSERT_EQ(qkv.rows, nq + 2 * nkv);
  const std::vector<bf16_bits> wqkv = pack_on_host(qkv);
  const PackedWeight bias = pack_qkv_bias(lw, c);
  ASSERT_EQ(bias.rows > 0, c.qkv_bias);
  const std::vector<bf16_bits> b = bias.rows > 0 ? pack_on_host(bias) : std::vector<bf16_bits>{};
  std::vector<float> q(size_t(M * nq)), k(size_t(M * nkv)), v(size_t(M * nkv));
  MatmulParams p;
  p.M = int(M), p.N = int(nq + 2 * nkv), p.K = int(K);
  p.x = x.data(), p.ldx = K, p.w = wqkv.data(), p.ldw = K, p.maybe_bias = b.empty() ? nullptr : b.data();
  p.epilogue = MatmulEpilogue::Qkv, p.out_type = MatmulOut::F32;
  p.y = q.data(), p.ldy = nq, p.num_q = int(nq), p.num_kv = int(nkv);
  p.k_out = k.data(), p.ld_k = nkv, p.v_out = v.data(), p.ld_v = nkv;
  cpu::matmul_bf16(p);
  const std::vector<double> bq = vec_bf16(lw.maybe_bq), bk = vec_bf16(lw.maybe_bk), bv = vec_bf16(lw.maybe_bv);
  for (auto [t, out, cols, bias_v, name] : {std::tuple{lw.wq, &q, nq, &bq, "q"}, std::tuple{lw.wk, &k, nkv, &bk, "k"},
                                           std::tuple{lw.wv, &v, nkv, &bv, "v"}}) {
    for (int64_t n = 0; n < cols; ++n) {
      const std::vector<double> w = row_bf16(*t, n);
      for (int64_t m = 0; m < M; ++m) {
        double abs_sum = 0;
        for (int64_t kk = 0; kk < K; ++kk) abs_sum += std::fabs(double(bf16_bits_to_f32(x[size_t(m * K + kk)])) * w[size_t(kk)]);
        const double want = dot(x, m, w) + (bias_v->empty() ? 0.0 : (*bias_v)[size_t(n)]);
        expect_close((*out)[size_t(m * cols + n)], want, abs_sum, std::string(name) + " row " + std::to_string(n));
      }
    }
  }

  // gate+up: the SiluMul epilogue over the interleaved weight against silu(x·gate)·(x·up) from the two tensors.
  const int64_t F = c.ffn_size;
  const PackedWeight gu = pack_gate_up(lw, c);
  const std::vector<bf16_bits> wgu = pack_on_host(gu);
  std::vector<float> act(size_t(M * F));
  MatmulParams g;
  g.M = int(M), g.N = int(2 * F), g.K = int(K);
  g.x = x.data(), g.ldx = K, g.w = wgu.data(), g.ldw = K;
  g.epilogue = MatmulEpilogue::SiluMul, g.out_type = MatmulOut::F32, g.y = act.data(), g.ldy = F;
  cpu::matmul_bf16(g);
  for (int64_t f = 0; f < F; ++f) {
    const std::vector<double> wg = row_bf16(*lw.w_gate, f), wu = row_bf16(*lw.w_up, f);
    for (int64_t m = 0; m < M; ++m) {
      const double a = dot(x, m, wg), u = dot(x, m, wu);
      double abs_sum = 0;
      for (int64_t kk = 0; kk < K; ++kk)
        abs_sum += std::fabs(double(bf16_bits_to_f32(x[size_t(m * K + kk)]))) * (std::fabs(wg[size_t(kk)]) + std::fabs(wu[size_t(kk)]));
      const double want = a / (1 + std::exp(-a)) * u;
      EXPECT_LE(std::fabs(double(act[size_t(m * F + f)]) - want), 1e-5 * abs_sum * (1 + std::fabs(u) + std::fabs(a)) + 1e-6)
          << "gate/up row " << f << " token " << m;
    }
  }
}

// The sampling batch packed into one buffer as CudaBackend uploads it: sampled from the packed copy (the twin on
// the host buffer, where the kernel reads the device copy), every row gives what the batch itself gives.
TEST(CudaSampleBatch, PackedCopySamplesAsTheBatchAndTheLayoutIsAlignedAndDisjoint) {
  const int32_t vocab = 320, rows = 4;
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(size_t(rows) * vocab);
  for (float& x : logits) x = normal(rng);
  cpu::SampleBatch batch;
  const std::vector<int32_t> context = {1, 2, 3, 250, 2}, generated = {3, 250, 250};
  for (int32_t r = 0; r < rows; ++r) {
    SampleRow row;
    row.temperature = r == 0 ? 0.0f : 0.8f;
    row.repetition_penalty = r == 1 ? 1.5f : 1.0f;
    row.presence_penalty = r >= 2 ? 0.5f : 0.0f;
    row.frequency_penalty = r == 3 ? 1.0f : 0.0f;
    row.top_k = r == 2 ? 20 : 0;
    row.seed = 11 + uint64_t(r), row.step = uint64_t(r) * 3;
    batch.add_row(row, context, generated, vocab);
  }
  const CudaSampleLayout l =
      cuda_sample_layout(rows, batch.penalties.rep_ids.size(), batch.penalties.freq_ids.size());
  const size_t starts[] = {l.rows, l.rep_offsets, l.rep_ids, l.freq_offsets, l.freq_ids, l.freq_counts, l.total};
  for (size_t i = 0; i + 1 < std::size(starts); ++i) {
    EXPECT_EQ(starts[i] % 16, 0u) << i;
    EXPECT_LT(starts[i], starts[i + 1]) << i;
  }
  EXPECT_GE(l.rep_offsets - l.rows, size_t(rows) * sizeof(SampleRow));

  std::vector<uint8_t> buffer(l.total + 64, 0xAB);
  const CudaSampleLayout packed = cuda_pack_sample_batch(batch, buffer.data(), buffer.size());
  EXPECT_EQ(packed.total, l.total);
  std::vector<float> a = logits, b = logits;
  int32_t ids_a[rows], ids_b[rows];
  float lp_a[rows], lp_b[rows];
  cpu::sample(batch.host_params(a.data(), vocab, vocab, ids_a, lp_a));
  cpu::sample(cuda_sample_params(packed, rows, buffer.data(), b.data(), vocab, ids_b, lp_b));
  for (int32_t r = 0; r < rows; ++r) {
    EXPECT_EQ(ids_a[r], ids_b[r]) << r;
    EXPECT_EQ(lp_a[r], lp_b[r]) << r;
  }
  EXPECT_EQ(a, b);  // the same penalties applied in place
  EXPECT_NE(a, logits);
}

TEST(CudaSampleBatch, RefusesBadBatchesBeforeAnythingIsQueued) {
  cpu::SampleBatch batch;
  batch.add_row(SampleRow{}, {}, {}, 100);
  std::vector<uint8_t> buffer(4096);
  cpu::SampleBatch bad = batch;
  bad.rows[0].top_p = 0.0f;
  test::expect_error([&] { cuda_pack_sample_batch(bad, buffer.data(), buffer.size()); }, {"row 0", "top_p"});
  bad = batch;
  bad.penalties.rep_offsets.push_back(3);  // a second row's list for a batch of one row
  test::expect_error([&] { cuda_pack_sample_batch(bad, buffer.data(), buffer.size()); }, {"penalty lists", "1 rows"});
  bad = batch;
  bad.penalties.freq_counts.push_back(1);  // a count without an id
  test::expect_error([&] { cuda_pack_sample_batch(bad, buffer.data(), buffer.size()); }, {"penalty lists"});
  test::expect_error([&] { cuda_pack_sample_batch(batch, buffer.data(), 16); }, {"do not fit", "16 byte"});
}

TEST(CudaWeightPacking, QkvWithBiasAndGateUpMatchTheUnpackedWeights) {
  const LoadedModel model = load_model(std::string(FLINT_TEST_DATA_DIR) + "/tiny-qwen2");  // f32, q/k/v biases
  check_layer_packing(model, 1);
}

TEST(CudaWeightPacking, QuantizedRowsGroupedByEightLandWhereTheInterleaveWantsThem) {
  const std::string path = std::string(FLINT_MODELS_DIR) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "run scripts/fetch-model.sh";
  const LoadedModel model = load_model(path);
  check_layer_packing(model, 0);
}

TEST(CudaWeightPacking, RefusesPiecesThatDoNotFit) {
  const LoadedModel model = load_model(std::string(FLINT_TEST_DATA_DIR) + "/tiny-llama");
  PackedWeight w = pack_qkv(model.weights.layers[0], model.config);
  w.rows -= 1;  // v's last row would fall outside
  std::vector<bf16_bits> out(size_t((w.rows + 1) * w.cols));
  test::expect_error([&] { pack_piece_params(w, w.pieces[2], nullptr, out.data()); }, {"overruns the packed weight"});
  EXPECT_EQ(pack_qkv_bias(model.weights.layers[0], model.config).rows, 0);  // llama: no biases
}

}  // namespace
}  // namespace flint
