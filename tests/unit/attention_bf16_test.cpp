// The attention twins (kernels/cpu/attention_bf16.h) against the fp32 references (kernels/cpu/attention.h,
// kernels/cpu/ops.h) on seeded random inputs, one analytic case, odd cache layouts, batch invariance, chunked
// prefill, and every error the call descriptions (kernels/attention_params.h) can report. The GPU kernels are
// checked against these twins, so the twins must be right first.
//
// Tolerances, per element, twin (bf16 out) against the fp32 reference:
//   attention: 2^-8·|ref| (the twin rounds once to bf16: half an ulp) + 2^-16·max|V| (two fp32 softmaxes that sum
//              in different orders: the reference's dot_f32 in 8 lanes, the twin one product at a time);
//   rope + norm: 2^-8·|ref| + 2^-18·max|head| (the same fp32 formulas; only the norm's sum of squares is ordered
//              differently).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/ops.h"
#include "tests/attention_problem.h"

namespace flint::attn_test {
namespace {

// The fp32 reference of p: the same logical K/V in cpu::PagedKv's [block][slot][head][dim] layout, same block ids.
std::vector<float> reference(Problem& p) {
  const Shape& sh = p.shape;
  const int32_t hd = sh.head_dim;
  cpu::PagedKv ref;
  std::vector<float> k(p.k.size()), v(p.v.size());
  ref.k = k.data(), ref.v = v.data(), ref.num_blocks = p.num_blocks, ref.block_size = sh.block_size;
  ref.num_kv_heads = sh.num_kv_heads, ref.head_dim = hd;
  const PagedKvCache c = p.cache();
  for (int32_t b = 0; b < p.num_blocks; ++b)
    for (int32_t slot = 0; slot < sh.block_size; ++slot)
      for (int32_t h = 0; h < sh.num_kv_heads; ++h)
        for (int32_t i = 0; i < hd; ++i) {
          k[size_t(ref.offset(b, slot, h) + i)] = bf16_bits_to_f32(p.k[size_t(c.offset(b, slot, h) + i)]);
          v[size_t(ref.offset(b, slot, h) + i)] = bf16_bits_to_f32(p.v[size_t(c.offset(b, slot, h) + i)]);
        }
  std::vector<float> q(size_t(p.num_tokens) * p.width()), out(q.size(), NAN);
  for (int32_t t = 0; t < p.num_tokens; ++t)
    for (int64_t i = 0; i < p.width(); ++i) q[size_t(t * p.width() + i)] = bf16_bits_to_f32(p.q[size_t(t * p.ld_q + i)]);
  cpu::AttentionBatch b;
  b.cu_seqlens = p.cu_seqlens.data(), b.kv_lens = p.kv_lens.data(), b.block_table = p.block_table.data();
  b.max_blocks_per_seq = p.max_blocks_per_seq, b.positions = p.positions.data();
  b.num_seqs = int32_t(p.seqs.size()), b.num_tokens = p.num_tokens;
  cpu::paged_attention(ref, b, q.data(), sh.num_qo_heads, 1.0f / std::sqrt(float(hd)), out.data());
  return out;
}

// The twin's output for the whole batch in one call (not per sequence, as run_twin does).
std::vector<bf16_bits> twin_one_call(Problem& p) {
  std::vector<bf16_bits> out(size_t(p.num_tokens) * p.ld_out, kNanBf16);
  std::vector<char> ws(attention_workspace_bytes(int32_t(p.seqs.size()), p.shape.num_qo_heads, p.shape.head_dim,
                                                 p.max_kv_len));
  cpu::paged_attention_bf16(attention_params(p, out.data(), ws.data(), ws.size()));
  return out;
}

void expect_matches_reference(Problem& p, const std::vector<bf16_bits>& got, const std::string& what) {
  const std::vector<float> want = reference(p);
  int bad = 0;
  for (int32_t t = 0; t < p.num_tokens; ++t) {
    // A prefill sequence's weights are rounded to bf16 for P·V, as the prefill kernel rounds them: each by at most
    // 2^-9 of itself, so the output moves by at most 2^-9 · max|v| (the weights sum to the normaliser).
    const bool prefill = p.seqs[size_t(p.seq_of_token(t))].q_len > 1;
    const double atol = std::ldexp(double(p.max_abs_v()), prefill ? -9 : -16);
    for (int64_t i = 0; i < p.width(); ++i) {
      const double g = bf16_bits_to_f32(got[size_t(t * p.ld_out + i)]), w = want[size_t(t * p.width() + i)];
      if (!(std::fabs(g - w) <= atol + std::ldexp(std::fabs(w), -8)) && bad++ < 3)
        ADD_FAILURE() << what << ": token " << t << " element " << i << ": twin " << g << ", reference " << w;
    }
  }
  EXPECT_EQ(bad, 0) << what;
  for (int32_t t = 0; t < p.num_tokens; ++t)  // the row padding is never written
    for (int64_t i = p.width(); i < p.ld_out; ++i) ASSERT_EQ(got[size_t(t * p.ld_out + i)], kNanBf16) << what;
}

std::string describe(const Shape& sh) {
  return "hd " + std::to_string(sh.head_dim) + " heads " + std::to_string(sh.num_qo_heads) + "/" +
         std::to_string(sh.num_kv_heads) + " bs " + std::to_string(sh.block_size);
}

TEST(AttentionBf16Twin, MatchesTheFp32ReferenceOnDecodeAndPrefill) {
  uint32_t seed = 10;
  for (const Shape sh : {Shape{64, 8, 2, 16}, Shape{128, 7, 1, 16}, Shape{64, 3, 3, 8}, Shape{128, 12, 2, 32}}) {
    // decode at and around block boundaries, prefill, prefix + chunk, in one batch
    Problem p = make_problem(sh, {{1, 1}, {1, 15}, {1, 16}, {1, 17}, {1, 300}, {15, 15}, {17, 17}, {40, 160}, {7, 33}},
                             seed += 10, /*q_pad=*/8, /*out_pad=*/16);
    expect_matches_reference(p, twin_one_call(p), describe(sh));
  }
}

// A query whose key stands far above the others: the output is that key's V row, bit for bit.
TEST(AttentionBf16Twin, OneHotSoftmaxGivesTheKeysValueRow) {
  for (const int32_t hd : {64, 128}) {
    const Shape sh{hd, 8, 2, 16};
    // decode: a random key of the sequence; prefill: every token its own position's key (the diagonal)
    Problem p = make_problem(sh, {{1, 1}, {1, 17}, {1, 300}, {50, 50}, {9, 70}}, 99 + hd);
    std::mt19937 rng(7);
    std::vector<int32_t> spike;
    for (const Seq& s : p.seqs) spike.push_back(int32_t(rng() % uint32_t(s.kv_len)));
    const double gap = make_one_hot(p, 5, [&](int32_t s, int32_t t) {
      return p.seqs[size_t(s)].q_len == 1 ? spike[size_t(s)] : p.positions[size_t(t)];
    });
    ASSERT_GE(gap, 30.0) << "the construction did not make the softmax one-hot";
    const std::vector<bf16_bits> out = twin_one_call(p);
    for (int32_t t = 0; t < p.num_tokens; ++t) {
      const int32_t s = p.seq_of_token(t);
      const int32_t key = p.seqs[size_t(s)].q_len == 1 ? spike[size_t(s)] : p.positions[size_t(t)];
      for (int32_t h = 0; h < sh.num_qo_heads; ++h) {
        const int64_t off = p.kv_offset(s, key, h / sh.group());
        ASSERT_EQ(0, std::memcmp(&out[size_t(t * p.ld_out + h * hd)], &p.v[size_t(off)], size_t(hd) * 2))
            << "hd " << hd << " token " << t << " head " << h << " key " << key;
      }
    }
  }
}

// The same logical cache at other strides ([block][slot][head][dim], padded) gives the same bits.
TEST(AttentionBf16Twin, ExplicitStridesGiveTheSameOutput) {
  const Shape sh{128, 8, 2, 16};
  Problem p = make_problem(sh, {{1, 1}, {1, 200}, {33, 33}, {5, 40}}, 31);
  const std::vector<bf16_bits> want = twin_one_call(p);
  const PagedKvCache c = p.cache();
  PagedKvCache odd = c;
  odd.slot_stride = int64_t(sh.num_kv_heads) * sh.head_dim + 8;  // slot-major, 16 bytes between slots
  odd.head_stride = sh.head_dim;
  odd.block_stride = odd.slot_stride * sh.block_size + 24;
  std::vector<bf16_bits> k(size_t(odd.block_stride) * p.num_blocks, kNanBf16), v(k.size(), kNanBf16);
  for (int32_t b = 0; b < p.num_blocks; ++b)
    for (int32_t slot = 0; slot < sh.block_size; ++slot)
      for (int32_t h = 0; h < sh.num_kv_heads; ++h)
        for (int32_t i = 0; i < sh.head_dim; ++i) {
          k[size_t(odd.offset(b, slot, h) + i)] = p.k[size_t(c.offset(b, slot, h) + i)];
          v[size_t(odd.offset(b, slot, h) + i)] = p.v[size_t(c.offset(b, slot, h) + i)];
        }
  odd.k = k.data(), odd.v = v.data();
  ASSERT_EQ(paged_kv_cache_error(odd), "");
  std::vector<bf16_bits> got(want.size(), kNanBf16);
  std::vector<char> ws(attention_workspace_bytes(4, sh.num_qo_heads, sh.head_dim, p.max_kv_len));
  AttentionParams a = attention_params(p, got.data(), ws.data(), ws.size());
  a.cache = odd;
  cpu::paged_attention_bf16(a);
  EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * 2));
}

// A sequence's output is the same alone as in any batch (run_twin calls it per 64-token slice of one sequence).
TEST(AttentionBf16Twin, OutputDoesNotDependOnTheOtherSequences) {
  Problem p = make_problem(Shape{64, 12, 4, 16}, {{1, 1000}, {100, 100}, {1, 0}, {1, 16}, {20, 530}, {1, 129}}, 41);
  const std::vector<bf16_bits> whole = twin_one_call(p), sliced = run_twin(p, 2);
  EXPECT_EQ(0, std::memcmp(whole.data(), sliced.data(), whole.size() * 2));
}

// Chunked prefill: tokens [0, prefix) written and attended in one step and [prefix, len) in a second give the
// same cache bits and the same output bits as all len tokens in one step.
TEST(AttentionBf16Twin, CachedPrefixPlusChunkEqualsAllAtOnce) {
  const Shape sh{128, 14, 2, 16};
  const int32_t len = 75, prefix = 33;
  std::vector<float> inv_freq(size_t(sh.head_dim / 2));
  cpu::RopeParams rp;
  rp.head_dim = sh.head_dim, rp.theta = 1e6f;
  cpu::rope_inv_freq(rp, inv_freq.data());
  const int64_t w = int64_t(sh.num_qo_heads) * sh.head_dim, kw = int64_t(sh.num_kv_heads) * sh.head_dim;
  const std::vector<bf16_bits> q0 = random_bf16(size_t(len * w), 1), k0 = random_bf16(size_t(len * kw), 2);
  const std::vector<bf16_bits> v0 = random_bf16(k0.size(), 3);
  // One step over tokens [first, last) of the sequence, whose cache already holds [0, first): rope + KV write,
  // then attention; returns the step's output rows.
  auto step = [&](Problem& p, int32_t first, int32_t last) {
    p.seqs = {{last - first, last}}, p.cu_seqlens = {0, last - first}, p.kv_lens = {last};
    p.positions.clear();
    for (int32_t t = first; t < last; ++t) p.positions.push_back(t);
    p.num_tokens = p.max_q_len = last - first, p.max_kv_len = last;
    p.ld_q = p.ld_out = w;
    p.q.assign(q0.begin() + first * w, q0.begin() + last * w);
    RopeKvParams r;
    r.cache = p.cache(), r.batch = p.batch(), r.q = p.q.data(), r.ld_q = w;
    r.k = k0.data() + first * kw, r.ld_k = kw, r.v = v0.data() + first * kw, r.ld_v = kw;
    r.num_qo_heads = sh.num_qo_heads, r.inv_freq = inv_freq.data();
    cpu::rope_write_kv_bf16(r);
    return twin_one_call(p);
  };
  Problem all = make_problem(sh, {{len, len}}, 51), split = all;  // same cache contents and block table
  const std::vector<bf16_bits> out_all = step(all, 0, len);
  const std::vector<bf16_bits> out_first = step(split, 0, prefix), out_second = step(split, prefix, len);
  EXPECT_EQ(split.k, all.k);
  EXPECT_EQ(split.v, all.v);
  EXPECT_EQ(0, std::memcmp(out_first.data(), out_all.data(), size_t(prefix * w) * 2));
  EXPECT_EQ(0, std::memcmp(out_second.data(), out_all.data() + prefix * w, size_t((len - prefix) * w) * 2));
  // The last token alone, marked a prefill chunk (decode_seqs 0): the prefill arithmetic, the same bits as in the
  // whole prompt. As a decode (decode_seqs -1) the twin computes it the decode kernel's way, which differs.
  Problem last = split;
  const std::vector<bf16_bits> as_decode = step(last, len - 1, len);
  last.decode_seqs = 0;
  const std::vector<bf16_bits> as_chunk = step(last, len - 1, len);
  EXPECT_EQ(0, std::memcmp(as_chunk.data(), out_all.data() + (len - 1) * w, size_t(w) * 2));
  EXPECT_NE(0, std::memcmp(as_decode.data(), out_all.data() + (len - 1) * w, size_t(w) * 2));
}

// RoPE + KV write against ops.h's rms_norm and rope on the same fp32 values: q rotated in place, K normed and
// rotated into its slot, V copied bit for bit, every other slot and the row padding untouched.
TEST(RopeWriteKvBf16Twin, MatchesOpsRopeAndRmsNormInBothStylesWithAndWithoutNorm) {
  uint32_t seed = 200;
  for (const int32_t hd : {64, 128})
    for (const RopeStyle style : {RopeStyle::Halves, RopeStyle::Interleaved})
      for (const bool norm : {false, true}) {
        const Shape sh{hd, 6, 2, 16};
        const std::string what = "hd " + std::to_string(hd) + (style == RopeStyle::Halves ? " halves" : " interleaved") +
                                 (norm ? " with q/k norm" : " without norm");
        Problem p = make_problem(sh, {{1, 40}, {20, 20}, {5, 300}, {1, 8000}}, seed += 10, /*q_pad=*/8);
        const int32_t n = p.num_tokens, nq = sh.num_qo_heads, nkv = sh.num_kv_heads;
        const int64_t ld_k = int64_t(nkv) * hd + 8, ld_v = int64_t(nkv) * hd + 16;
        const std::vector<bf16_bits> k_in = random_bf16(size_t(n * ld_k), seed + 1), v_in = random_bf16(size_t(n * ld_v), seed + 2);
        const std::vector<bf16_bits> q_norm = random_bf16(size_t(hd), seed + 3, 0.5f, 1.5f);
        const std::vector<bf16_bits> k_norm = random_bf16(size_t(hd), seed + 4, 0.5f, 1.5f);
        cpu::RopeParams rp;  // Llama-3.1's scaled frequencies
        rp.head_dim = hd, rp.theta = 500000.0f, rp.style = style, rp.scaling_factor = 32.0f;
        rp.low_freq_factor = 1.0f, rp.high_freq_factor = 4.0f, rp.original_max_position = 8192;
        std::vector<float> inv_freq(size_t(hd / 2));
        cpu::rope_inv_freq(rp, inv_freq.data());
        const Problem before = p;
        RopeKvParams r;
        r.cache = p.cache(), r.batch = p.batch(), r.q = p.q.data(), r.ld_q = p.ld_q;
        r.k = k_in.data(), r.ld_k = ld_k, r.v = v_in.data(), r.ld_v = ld_v, r.num_qo_heads = nq;
        r.inv_freq = inv_freq.data(), r.style = style, r.norm_eps = 1e-6f;
        if (norm) r.maybe_q_norm = q_norm.data(), r.maybe_k_norm = k_norm.data();
        cpu::rope_write_kv_bf16(r);

        // The reference: (n, heads, hd) fp32 rows through rms_norm, then rope.
        auto reference = [&](const std::vector<bf16_bits>& in, int64_t ld, int32_t heads, const std::vector<bf16_bits>& w) {
          std::vector<float> x(size_t(n) * heads * hd), wf(static_cast<size_t>(hd));
          for (int32_t t = 0; t < n; ++t)
            for (int64_t i = 0; i < int64_t(heads) * hd; ++i) x[size_t(t * heads * hd + i)] = bf16_bits_to_f32(in[size_t(t * ld + i)]);
          for (int32_t i = 0; i < hd; ++i) wf[size_t(i)] = bf16_bits_to_f32(w[size_t(i)]);
          if (norm) cpu::rms_norm(x.data(), wf.data(), x.data(), int64_t(n) * heads, hd, 1e-6f);
          cpu::rope(x.data(), p.positions.data(), n, heads, rp, inv_freq.data());
          return x;
        };
        // got(t, h, i) against ref row (t, h): 2^-8·|ref| + 2^-18·max|ref over the head|.
        auto check_head = [&](const float* ref, auto&& got, const std::string& where) {
          float mx = 0.0f;
          for (int32_t i = 0; i < hd; ++i) mx = std::max(mx, std::fabs(ref[i]));
          for (int32_t i = 0; i < hd; ++i) {
            const double g = bf16_bits_to_f32(got(i));
            ASSERT_LE(std::fabs(g - ref[i]), std::ldexp(std::fabs(double(ref[i])), -8) + std::ldexp(double(mx), -18))
                << what << ": " << where << " dim " << i << ": twin " << g << ", reference " << ref[i];
          }
        };
        const std::vector<float> q_ref = reference(before.q, p.ld_q, nq, q_norm), k_ref = reference(k_in, ld_k, nkv, k_norm);
        std::vector<bool> written(size_t(p.num_blocks) * sh.block_size, false);
        const PagedKvCache c = p.cache();
        for (int32_t t = 0; t < n; ++t) {
          for (int32_t h = 0; h < nq; ++h)
            check_head(&q_ref[size_t((t * nq + h) * hd)], [&](int32_t i) { return p.q[size_t(t * p.ld_q + h * hd + i)]; },
                       "q token " + std::to_string(t) + " head " + std::to_string(h));
          for (int64_t i = int64_t(nq) * hd; i < p.ld_q; ++i) ASSERT_EQ(p.q[size_t(t * p.ld_q + i)], before.q[size_t(t * p.ld_q + i)]);
          const int32_t s = p.seq_of_token(t), pos = p.positions[size_t(t)];
          const int32_t block = p.block_table[size_t(s * p.max_blocks_per_seq + pos / sh.block_size)];
          written[size_t(block * sh.block_size + pos % sh.block_size)] = true;
          for (int32_t h = 0; h < nkv; ++h) {
            const int64_t off = c.offset(block, pos % sh.block_size, h);
            check_head(&k_ref[size_t((t * nkv + h) * hd)], [&](int32_t i) { return p.k[size_t(off + i)]; },
                       "k token " + std::to_string(t) + " head " + std::to_string(h));
            ASSERT_EQ(0, std::memcmp(&p.v[size_t(off)], &v_in[size_t(t * ld_v + h * hd)], size_t(hd) * 2)) << what;
          }
        }
        for (int32_t b = 0; b < p.num_blocks; ++b)
          for (int32_t slot = 0; slot < sh.block_size; ++slot) {
            if (written[size_t(b * sh.block_size + slot)]) continue;
            for (int32_t h = 0; h < nkv; ++h) {
              const size_t off = size_t(c.offset(b, slot, h));
              ASSERT_EQ(0, std::memcmp(&p.k[off], &before.k[off], size_t(hd) * 2)) << what << ": block " << b << " slot " << slot;
              ASSERT_EQ(0, std::memcmp(&p.v[off], &before.v[off], size_t(hd) * 2)) << what << ": block " << b << " slot " << slot;
            }
          }
      }
}

// call() must throw flint::Error whose message contains `needle`.
template <class Call>
void expect_error(Call&& call, const std::string& needle) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one containing \"" << needle << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

TEST(AttentionBf16Twin, BadCallsThrowAnErrorNamingTheProblem) {
  Problem p = make_problem(Shape{64, 8, 2, 16}, {{1, 200}, {3, 3}}, 61);
  std::vector<bf16_bits> out(size_t(p.num_tokens) * p.ld_out);
  std::vector<char> ws(attention_workspace_bytes(2, 8, 64, p.max_kv_len));
  const AttentionParams good = attention_params(p, out.data(), ws.data(), ws.size());
  ASSERT_NO_THROW(cpu::paged_attention_bf16(good));
  auto bad = [&](auto&& change, const std::string& needle) {
    AttentionParams a = good;
    change(a);
    expect_error([&] { cpu::paged_attention_bf16(a); }, needle);
  };
  bad([](AttentionParams& a) { a.cache.v = nullptr; }, "k and v must not be null");
  bad([](AttentionParams& a) { a.cache.num_blocks = 0; }, "num_blocks, block_size and num_kv_heads must be >= 1");
  bad([](AttentionParams& a) { a.cache.block_size = -1; }, "num_blocks, block_size and num_kv_heads must be >= 1");
  bad([](AttentionParams& a) { a.cache.head_dim = 96; }, "head_dim 96 is not supported");
  bad([](AttentionParams& a) { a.cache.slot_stride = a.cache.head_stride = 8; }, "overlap a head's values");
  bad([](AttentionParams& a) { a.cache.slot_stride += 4; }, "multiples of 8 elements");
  bad([](AttentionParams& a) { a.cache.block_stride -= 8; }, "is smaller than one block's span");
  bad([](AttentionParams& a) { a.batch.num_seqs = 0; }, "num_seqs and num_tokens must be >= 1");
  bad([](AttentionParams& a) { a.batch.positions = nullptr; }, "must not be null");
  bad([](AttentionParams& a) { a.batch.max_blocks_per_seq = 0; }, "max_blocks_per_seq must be >= 1");
  bad([](AttentionParams& a) { a.batch.max_q_len = a.batch.num_tokens + 1; }, "max_q_len 5 must be in [1, num_tokens = 4]");
  bad([](AttentionParams& a) { a.batch.max_kv_len = 0; }, "max_kv_len must be >= 1");
  bad([](AttentionParams& a) { a.num_qo_heads = 5; }, "num_qo_heads 5 must be a positive multiple of num_kv_heads 2");
  bad([](AttentionParams& a) { a.out = nullptr; }, "q and out must not be null");
  bad([](AttentionParams& a) { a.ld_q = 500; }, "ld_q and ld_out must be >= num_qo_heads * head_dim = 512");
  bad([](AttentionParams& a) { a.ld_out = 516; }, "ld_q and ld_out must be multiples of 8");
  bad([](AttentionParams& a) { a.scale = NAN; }, "scale must be > 0");
  bad([](AttentionParams& a) { a.workspace_bytes -= 4; }, "needs a workspace of");
  bad([](AttentionParams& a) { a.workspace = nullptr; }, "needs a workspace of");
  // The arrays' contents: a block id outside the cache, a position past the table, a sequence with no key.
  std::vector<int32_t> table = p.block_table, positions = p.positions, kv_lens = p.kv_lens;
  table[1] = p.num_blocks;
  bad([&](AttentionParams& a) { a.batch.block_table = table.data(); }, "outside the cache's");
  table[1] = -1;
  bad([&](AttentionParams& a) { a.batch.block_table = table.data(); }, "block id -1 of sequence 0 is outside the cache");
  positions[3] = p.max_blocks_per_seq * 16;
  kv_lens[1] = positions[3] + 1;
  bad([&](AttentionParams& a) { a.batch.positions = positions.data(), a.batch.kv_lens = kv_lens.data(); }, "of a table 13 wide");
}

// Padding sequences (kv_len 0, one token at position -1, as a CUDA graph's bucket fills its unused sequences):
// their out rows and the cache are left as they are, q is rotated, and the other sequences' bits do not change.
TEST(AttentionBf16Twin, PaddingSequencesReadAndWriteNothing) {
  const Shape sh{64, 8, 2, 16};
  Problem p = make_problem(sh, {{1, 0}, {1, 300}, {12, 40}, {1, 0}, {1, 0}}, 81);
  const std::vector<bf16_bits> out = twin_one_call(p);
  for (int32_t s : {0, 3, 4})
    for (int64_t i = 0; i < p.ld_out; ++i) ASSERT_EQ(out[size_t(p.cu_seqlens[size_t(s)] * p.ld_out + i)], kNanBf16);
  Problem real = make_problem(sh, {{1, 300}, {12, 40}}, 0);  // the same two sequences, no padding
  real.k = p.k, real.v = p.v, real.num_blocks = p.num_blocks, real.max_blocks_per_seq = p.max_blocks_per_seq;
  real.block_table.assign(p.block_table.begin() + p.max_blocks_per_seq, p.block_table.begin() + 3 * p.max_blocks_per_seq);
  real.q.assign(p.q.begin() + p.ld_q, p.q.begin() + 14 * p.ld_q);
  real.ld_q = p.ld_q;
  const std::vector<bf16_bits> want = twin_one_call(real);
  EXPECT_EQ(0, std::memcmp(want.data(), &out[size_t(p.ld_out)], want.size() * 2));

  // RoPE + KV write: a padding token's q row is rotated, nothing of it is stored.
  const std::vector<float> inv_freq(32, 0.02f);
  const int64_t kw = 2 * 64;
  const std::vector<bf16_bits> k = random_bf16(size_t(p.num_tokens * kw), 1), v = random_bf16(size_t(p.num_tokens * kw), 2);
  const Problem before = p;
  RopeKvParams r;
  r.cache = p.cache(), r.batch = p.batch(), r.q = p.q.data(), r.ld_q = p.ld_q, r.k = k.data(), r.ld_k = kw;
  r.v = v.data(), r.ld_v = kw, r.num_qo_heads = 8, r.inv_freq = inv_freq.data();
  cpu::rope_write_kv_bf16(r);
  EXPECT_NE(0, std::memcmp(&p.q[0], &before.q[0], size_t(p.width()) * 2)) << "padding token's q was not rotated";
  int changed_slots = 0;
  const PagedKvCache c = p.cache();
  for (int32_t b = 0; b < p.num_blocks; ++b)
    for (int32_t slot = 0; slot < 16; ++slot)
      changed_slots += std::memcmp(&p.k[size_t(c.offset(b, slot, 0))], &before.k[size_t(c.offset(b, slot, 0))], 128) != 0;
  EXPECT_EQ(changed_slots, p.num_tokens - 3) << "only the real tokens' slots are written";
}

// The QKV matmul's split-K partial sums in place of q, k, v: the same q, K and V bits as when q, k and v are first
// finished on the host the way the matmul's Qkv epilogue finishes them (splits in order, + bias, bf16).
TEST(RopeWriteKvBf16Twin, QkvPartialsGiveTheBitsOfTheFinishedInputs) {
  uint32_t seed = 400;
  for (const int32_t hd : {64, 128})
    for (const bool bias : {false, true})
      for (const int32_t splits : {1, 3}) {
        const Shape sh{hd, 6, 2, 16};
        SCOPED_TRACE("hd " + std::to_string(hd) + (bias ? " with bias" : "") + " splits " + std::to_string(splits));
        Problem with_parts = make_problem(sh, {{1, 40}, {7, 7}, {3, 300}}, seed += 10);
        Problem finished = with_parts;
        const int32_t n = with_parts.num_tokens, nq = sh.num_qo_heads, nkv = sh.num_kv_heads;
        const int64_t cols = int64_t(nq + 2 * nkv) * hd, slice = int64_t(n) * cols;
        std::vector<float> parts(size_t(splits * slice));
        std::mt19937 rng(seed + 1);
        std::normal_distribution<float> dist(0.0f, 0.7f);
        for (float& f : parts) f = dist(rng);
        const std::vector<bf16_bits> b = random_bf16(size_t(cols), seed + 2);
        const std::vector<bf16_bits> norm = random_bf16(size_t(hd), seed + 3, 0.5f, 1.5f);
        std::vector<float> inv_freq(size_t(hd / 2));
        for (int32_t i = 0; i < hd / 2; ++i) inv_freq[size_t(i)] = std::pow(1e6f, -float(2 * i) / float(hd));
        // q | k | v finished on the host: the epilogue's arithmetic.
        std::vector<bf16_bits> q(size_t(n) * nq * hd), k(size_t(n) * nkv * hd), v(k.size());
        for (int32_t t = 0; t < n; ++t)
          for (int64_t col = 0; col < cols; ++col) {
            float s = parts[size_t(t * cols + col)];
            for (int32_t z = 1; z < splits; ++z) s = s + parts[size_t(z * slice + t * cols + col)];
            if (bias) s = s + bf16_bits_to_f32(b[size_t(col)]);
            const bf16_bits h = f32_to_bf16_bits(s);
            const int64_t qw = int64_t(nq) * hd, kw = int64_t(nkv) * hd;
            if (col < qw) q[size_t(t * qw + col)] = h;
            else if (col < qw + kw) k[size_t(t * kw + col - qw)] = h;
            else v[size_t(t * kw + col - qw - kw)] = h;
          }
        RopeKvParams r;
        r.ld_q = int64_t(nq) * hd, r.num_qo_heads = nq, r.inv_freq = inv_freq.data(), r.norm_eps = 1e-6f;
        r.maybe_q_norm = norm.data(), r.maybe_k_norm = norm.data();
        RopeKvParams a = r;
        a.cache = finished.cache(), a.batch = finished.batch();
        finished.q = q;
        a.q = finished.q.data(), a.k = k.data(), a.ld_k = int64_t(nkv) * hd, a.v = v.data(), a.ld_v = a.ld_k;
        cpu::rope_write_kv_bf16(a);
        RopeKvParams c = r;  // q's old contents do not matter: it is written from the partials
        c.cache = with_parts.cache(), c.batch = with_parts.batch(), c.q = with_parts.q.data();
        c.maybe_qkv_partials = parts.data(), c.qkv_splits = splits, c.maybe_qkv_bias = bias ? b.data() : nullptr;
        cpu::rope_write_kv_bf16(c);
        EXPECT_EQ(with_parts.q, finished.q);
        EXPECT_EQ(with_parts.k, finished.k);
        EXPECT_EQ(with_parts.v, finished.v);
      }
}

TEST(RopeWriteKvBf16Twin, BadCallsThrowAnErrorNamingTheProblem) {
  Problem p = make_problem(Shape{128, 4, 2, 16}, {{2, 40}}, 71);
  const int64_t kw = 2 * 128;
  const std::vector<bf16_bits> k = random_bf16(size_t(2 * kw), 1), v = random_bf16(size_t(2 * kw), 2);
  const std::vector<float> inv_freq(64, 0.01f);
  const std::vector<bf16_bits> norm = random_bf16(128, 3, 0.5f, 1.5f);
  RopeKvParams good;
  good.cache = p.cache(), good.batch = p.batch(), good.q = p.q.data(), good.ld_q = p.ld_q;
  good.k = k.data(), good.ld_k = kw, good.v = v.data(), good.ld_v = kw, good.num_qo_heads = 4;
  good.inv_freq = inv_freq.data(), good.maybe_q_norm = norm.data();
  ASSERT_NO_THROW(cpu::rope_write_kv_bf16(good));
  auto bad = [&](auto&& change, const std::string& needle) {
    RopeKvParams r = good;
    change(r);
    expect_error([&] { cpu::rope_write_kv_bf16(r); }, needle);
  };
  bad([](RopeKvParams& r) { r.cache.head_dim = 80; }, "head_dim 80 is not supported");
  bad([](RopeKvParams& r) { r.batch.num_tokens = 0; }, "num_seqs and num_tokens must be >= 1");
  bad([](RopeKvParams& r) { r.num_qo_heads = 3; }, "rope_kv: num_qo_heads 3 must be a positive multiple of num_kv_heads 2");
  bad([](RopeKvParams& r) { r.inv_freq = nullptr; }, "q and inv_freq must not be null");
  bad([](RopeKvParams& r) { r.v = nullptr; }, "k and v must not be null (no qkv partials");
  bad([](RopeKvParams& r) { r.maybe_qkv_partials = r.inv_freq, r.qkv_splits = 0; }, "qkv_splits 0 must be >= 1");
  bad([](RopeKvParams& r) { r.ld_v = 255; }, "ld_q, ld_k, ld_v must cover their heads");
  bad([](RopeKvParams& r) { r.style = RopeStyle(7); }, "unknown rope style 7");
  bad([](RopeKvParams& r) { r.norm_eps = 0.0f; }, "norm_eps must be > 0");
  std::vector<int32_t> table = p.block_table;
  table[2] = p.num_blocks + 3;  // position 39's block
  bad([&](RopeKvParams& r) { r.batch.block_table = table.data(); }, "outside the cache's");
}

}  // namespace
}  // namespace flint::attn_test
