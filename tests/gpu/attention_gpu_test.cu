// The CUDA attention kernels (kernels/cuda/attention.h) against their CPU twins (kernels/cpu/attention_bf16.h), every
// element, on seeded random inputs (tests/attention_problem.h: shuffled block tables, every cache block random):
// head_dim 64 and 128, GQA ratios 1, 3, 4, 7, 8 (9 and 16 in the mixed batches), contexts 1 .. 40000 around block
// and split boundaries and past the split cap, block sizes 8, 16 and 32, decode-only, prefill-only and mixed
// batches, a cached prefix plus a new chunk, a one-hot softmax (exact), odd cache strides, batch invariance bit for
// bit, and RoPE + KV write.
// Skips every test that needs a GPU when none is present (FLINT_REQUIRE_GPU turns the skip into a failure).
//
// Tolerance, per output element, |gpu - twin| <= atol + 2^-7·|twin| (2^-7·|twin|: one bf16 ulp, since two fp32
// results that differ slightly can round to neighbouring bf16 values), with atol from the kernel's arithmetic:
//   decode  (a sequence with one query token): atol = 2^-14·max|V|. Scores, softmax and P·V are all fp32 in both;
//           only the order differs (online softmax in splits of 128 or more keys merged by rescaling, exp2 with the
//           scale folded into log2 e): relative differences of ~2^-20 in the weights, 2^-14 leaves a margin of ~64.
//   prefill (more than one query token): atol = 2^-8·max|V|. The kernel rounds P (in [0, 1] after subtracting the
//           running max) to bf16 for the tensor-core P·V step while the row sum adds the unrounded weights: each
//           weight is off by at most half an ulp (2^-8 relative at worst), so the weighted mean of V is off by at
//           most 2^-8·max|V|, a bound reached only if every rounding went the same way as its V; with random
//           data the errors cancel to far less (the summary's ratio shows the margin). fp32 reordering (~2^-20)
//           is small beside it. Masking mistakes move an output by about |v| / keys, over 2^-7 at the short
//           lengths tested (2 .. 65 keys).
//   rope_kv: atol = 2^-14·max|head| (the same fp32 formulas; sincosf, sqrtf and the norm's sum of squares differ
//           by a few fp32 ulps), V bit for bit, untouched slots and row padding bit for bit.
// max|V| is over the whole cache (uniform in [-1, 1): about 1). The one-hot case and batch invariance are exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_check.h"
#include "tests/attention_problem.h"
#include "tests/gpu/gpu_test_util.h"

namespace flint::cuda {
namespace {

using attn_test::kNanBf16;
using attn_test::make_problem;
using attn_test::Problem;
using attn_test::random_bf16;
using attn_test::Seq;
using attn_test::Shape;

using gpu_test::DeviceBuffer;
using gpu_test::summary_add;

// A device buffer holding a copy of v.
struct DeviceCopy : DeviceBuffer {
  template <class T>
  explicit DeviceCopy(const std::vector<T>& v) : DeviceBuffer(v.size() * sizeof(T)) {
    upload(v);
  }
};

// Zeroed split counters for calls up to num_seqs sequences of num_qo_heads heads with these many keys.
struct SplitCounters : DeviceBuffer {
  SplitCounters(int32_t num_seqs, int32_t num_qo_heads, int32_t max_kv_len)
      : DeviceBuffer(attention_split_counters(num_seqs, num_qo_heads, max_kv_len) * 4),
        count(attention_split_counters(num_seqs, num_qo_heads, max_kv_len)) {
    if (bytes()) CUDA_CHECK(cudaMemset(as<void>(), 0, bytes()));
  }
  size_t count;
  // How many are not zero (each call must leave them zero).
  size_t nonzero() const {
    size_t n = 0;
    for (int32_t c : download<int32_t>(count)) n += c != 0;
    return n;
  }
};

// The kernels' output for p (host arrays copied to the device; out and workspace poisoned first). The batch's
// maxima can be raised to upper bounds, as a CUDA graph replayed with new inputs gives them. The split counters
// are new ones unless given (then they must hold enough for the call).
std::vector<bf16_bits> run_gpu(Problem& p, int32_t max_q_len_bound = 0, int32_t max_kv_len_bound = 0,
                               SplitCounters* counters = nullptr, int64_t l2_ahead_bytes = 0) {
  DeviceCopy k(p.k), v(p.v), q(p.q), cu(p.cu_seqlens), kv_lens(p.kv_lens), table(p.block_table), pos(p.positions);
  DeviceBuffer out(size_t(p.num_tokens) * p.ld_out * 2);
  AttentionParams a = attn_test::attention_params(p, out.as<bf16_bits>(), nullptr, 0);
  a.cache.k = k.as<bf16_bits>(), a.cache.v = v.as<bf16_bits>(), a.q = q.as<bf16_bits>();
  a.batch.cu_seqlens = cu.as<int32_t>(), a.batch.kv_lens = kv_lens.as<int32_t>();
  a.batch.block_table = table.as<int32_t>(), a.batch.positions = pos.as<int32_t>();
  if (max_q_len_bound) a.batch.max_q_len = max_q_len_bound;
  if (max_kv_len_bound) a.batch.max_kv_len = max_kv_len_bound;
  DeviceBuffer ws(attention_workspace_bytes(a.batch.num_seqs, a.num_qo_heads, a.cache.head_dim, a.batch.max_kv_len));
  a.workspace = ws.as<void>(), a.workspace_bytes = ws.bytes();
  SplitCounters own(a.batch.num_seqs, a.num_qo_heads, a.batch.max_kv_len);
  SplitCounters& c = counters ? *counters : own;
  a.split_counters = c.as<int32_t>(), a.num_split_counters = c.count;
  a.l2_ahead_bytes = l2_ahead_bytes;
  out.poison(), ws.poison();
  std::string why;
  const cudaError_t e = paged_attention(a, nullptr, &why);
  EXPECT_EQ(e, cudaSuccess) << cudaGetErrorName(e) << ": " << why;
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(c.nonzero(), 0u) << "split counters left non-zero";
  return out.download<bf16_bits>(size_t(p.num_tokens) * p.ld_out);
}

std::string describe(const Shape& sh) {
  return "hd" + std::to_string(sh.head_dim) + " " + std::to_string(sh.num_qo_heads) + "/" +
         std::to_string(sh.num_kv_heads) + " bs" + std::to_string(sh.block_size);
}

// Every output element against the twin (decode or prefill tolerance by the token's sequence), the row padding
// and padding sequences' rows (kv_len 0) untouched; logs the worst ratio per kernel.
void expect_close_to_twin(const std::string& what, Problem& p, const std::vector<bf16_bits>& got,
                          const std::vector<bf16_bits>& twin) {
  const double max_v = p.max_abs_v();
  struct Worst {
    double ratio = 0, abs = 0;
    int bad = 0, cases = 0;
    std::string first;
  } worst[2];  // decode, prefill
  int bad_pad = 0;
  for (int32_t t = 0; t < p.num_tokens; ++t) {
    const Seq seq = p.seqs[size_t(p.seq_of_token(t))];
    if (seq.kv_len == 0) {  // padding: nothing written
      for (int64_t i = 0; i < p.ld_out; ++i) bad_pad += got[size_t(t * p.ld_out + i)] != kNanBf16;
      continue;
    }
    const bool decode = p.is_decode(p.seq_of_token(t));
    Worst& w = worst[decode ? 0 : 1];
    w.cases = 1;
    const double atol = std::ldexp(max_v, decode ? -14 : -8);
    for (int64_t i = 0; i < p.width(); ++i) {
      const double g = bf16_bits_to_f32(got[size_t(t * p.ld_out + i)]), r = bf16_bits_to_f32(twin[size_t(t * p.ld_out + i)]);
      const double tol = atol + std::ldexp(std::fabs(r), -7), err = std::fabs(g - r);
      if (!(err <= tol)) {  // NaN (an unwritten output) fails too
        if (w.bad++ == 0)
          w.first = "token " + std::to_string(t) + " element " + std::to_string(i) + ": gpu " + std::to_string(g) +
                    ", twin " + std::to_string(r) + ", tol " + std::to_string(tol);
        continue;
      }
      w.ratio = std::max(w.ratio, err / tol), w.abs = std::max(w.abs, err);
    }
    for (int64_t i = p.width(); i < p.ld_out; ++i) bad_pad += got[size_t(t * p.ld_out + i)] != kNanBf16;
  }
  EXPECT_EQ(bad_pad, 0) << what << ": " << bad_pad << " elements of out's row padding or padding rows were written";
  for (int d = 0; d < 2; ++d) {
    const Worst& w = worst[d];
    if (!w.cases) continue;
    const char* kernel = d == 0 ? "attn.decode" : "attn.prefill";
    summary_add(kernel, w.bad ? INFINITY : w.ratio, w.abs);
    EXPECT_EQ(w.bad, 0) << what << " [" << kernel << "]: " << w.bad << " elements outside tolerance; first at " << w.first;
    std::printf("  %-52s %-12s max |err| %.3g = %.3f of tolerance\n", what.c_str(), kernel, w.abs, w.ratio);
  }
}

void check_against_twin(const std::string& what, Problem& p) {
  const std::vector<bf16_bits> twin = attn_test::run_twin(p), got = run_gpu(p);
  expect_close_to_twin(what, p, got, twin);
}

constexpr int32_t kRatios[] = {1, 3, 4, 7, 8};

Shape gqa_shape(int32_t hd, int32_t ratio, int32_t bs) {
  const int32_t kv = ratio == 1 ? 4 : 2;
  return Shape{hd, kv * ratio, kv, bs};
}

TEST(AttentionGpu, DecodeMatchesTheTwinOverHeadDimsRatiosContextsAndBlockSizes) {
  REQUIRE_GPU();
  uint32_t seed = 1000;
  for (int32_t hd : {64, 128})
    for (int32_t ratio : kRatios)
      for (int32_t bs : {16, 32}) {
        const Shape sh = gqa_shape(hd, ratio, bs);
        // contexts at block (15..17, 31..33) and split (128, 129, 256, 257) boundaries, long ones split many ways
        Problem p = make_problem(sh, {{1, 1}, {1, 15}, {1, 16}, {1, 17}, {1, 33}, {1, 128}, {1, 129}, {1, 257},
                                      {1, 1000}, {1, 8191}},
                                 seed += 10);
        check_against_twin("decode " + describe(sh), p);
      }
  // Block sizes that are not a multiple of 16 keys (8, 24): a decode kernel's 16-key tile then spans cache blocks.
  for (int32_t hd : {64, 128})
    for (int32_t bs : {8, 24}) {
      const Shape sh = gqa_shape(hd, 4, bs);
      Problem p = make_problem(sh, {{1, 7}, {1, 23}, {1, 40}, {1, 129}, {1, 1000}}, seed += 10);
      check_against_twin("decode " + describe(sh), p);
    }
}

// Past 16384 keys a split grows by 128-key steps (at most kAttnMaxSplits per sequence): around the step
// (16384: 128 splits of 128; 16385: 65 of 256), a long one (40000: 105 of 384), and the same sequences under a
// graph's upper bound on max_kv_len (65536), whose grid and workspace stride are its attention_max_splits.
TEST(AttentionGpu, LongContextsPastTheSplitCapMatchTheTwin) {
  REQUIRE_GPU();
  for (int32_t hd : {64, 128}) {
    const Shape sh = gqa_shape(hd, 4, 16);
    Problem p = make_problem(sh, {{1, 16384}, {1, 16385}, {1, 40000}, {1, 300}}, 1500 + hd);
    check_against_twin("decode past the split cap " + describe(sh), p);
    const std::vector<bf16_bits> twin = attn_test::run_twin(p), bounded = run_gpu(p, 0, 65536);
    expect_close_to_twin("decode past the split cap, max_kv_len 65536 " + describe(sh), p, bounded, twin);
  }
}

// One set of split counters for call after call (as a CUDA graph replays with new inputs): the last block of each
// sequence's head chunk merges its splits and leaves its counter at zero (run_gpu checks), so the next call, with
// other split counts and grids, merges right too.
TEST(AttentionGpu, DecodeSplitCountersServeCallAfterCall) {
  REQUIRE_GPU();
  for (int32_t hd : {64, 128}) {
    const Shape sh = gqa_shape(hd, 7, 16);  // 7 query heads a KV head: one head chunk (SIMT), one (mma)
    SplitCounters counters(3, sh.num_qo_heads, 65536);
    Problem a = make_problem(sh, {{1, 300}, {1, 1000}, {1, 129}}, 1700 + hd);
    Problem b = make_problem(sh, {{1, 5000}}, 1710 + hd);
    Problem c = make_problem(gqa_shape(hd, 1, 16), {{1, 2000}, {1, 17}}, 1720 + hd);  // other heads, other grid
    for (int round = 0; round < 2; ++round) {
      const std::string r = " (round " + std::to_string(round) + ") " + describe(sh);
      expect_close_to_twin("split counters, 3 sequences" + r, a, run_gpu(a, 0, 0, &counters), attn_test::run_twin(a));
      expect_close_to_twin("split counters, 1 sequence" + r, b, run_gpu(b, 0, 0, &counters), attn_test::run_twin(b));
      expect_close_to_twin("split counters, bound 65536" + r, a, run_gpu(a, 0, 65536, &counters),
                           attn_test::run_twin(a));
      expect_close_to_twin("split counters, GQA 1" + r, c, run_gpu(c, 0, 0, &counters), attn_test::run_twin(c));
    }
  }
}

// The K/V pages asked of L2 before the PDL wait (FLINT_ATTN_AHEAD) are a hint: the same bits with them, at both head
// dims, block sizes that are and are not a multiple of 16, a mixed batch and a graph's raised bounds. The emulator
// checks every prefetch's range (inside the cache, whole 16-byte units).
TEST(AttentionGpu, DecodeKvAheadChangesNoBits) {
  REQUIRE_GPU();
  uint32_t seed = 1800;
  for (int32_t hd : {64, 128})
    for (int32_t bs : {16, 24}) {
      const Shape sh = gqa_shape(hd, 4, bs);
      Problem p = make_problem(sh, {{1, 1000}, {1, 17}, {5, 5}, {1, 4096}, {0, 0}}, seed += 10);
      const std::vector<bf16_bits> plain = run_gpu(p), ahead = run_gpu(p, 0, 0, nullptr, int64_t(1) << 40);
      const std::vector<bf16_bits> bounded = run_gpu(p, 0, 8192, nullptr, int64_t(1) << 40);
      size_t differ = 0;
      for (size_t i = 0; i < plain.size(); ++i) differ += (ahead[i] != plain[i]) + (bounded[i] != plain[i]);
      EXPECT_EQ(differ, 0u) << describe(sh) << ": outputs differ with the K/V prefetched";
    }
}

TEST(AttentionGpu, PrefillMatchesTheTwinOverHeadDimsRatiosLengthsAndBlockSizes) {
  REQUIRE_GPU();
  uint32_t seed = 2000;
  for (int32_t hd : {64, 128})
    for (int32_t ratio : kRatios)
      for (int32_t bs : {16, 8}) {
        const Shape sh = gqa_shape(hd, ratio, bs);
        std::vector<Seq> seqs = {{2, 2}, {15, 15}, {16, 16}, {17, 17}, {65, 65}};
        seqs.push_back(bs == 16 ? Seq{1000, 1000} : Seq{130, 130});  // the twin's cost bounds the long one
        Problem p = make_problem(sh, seqs, seed += 10, /*q_pad=*/8, /*out_pad=*/8);
        check_against_twin("prefill " + describe(sh), p);
      }
}

// Decode and prefill sequences of random lengths in one call, on the three models' head shapes and two GQA groups
// of more than 8 query heads (9: the decode kernel cuts the group into head chunks of 5 and 4; 16: two of 8), with
// padding sequences (kv_len 0, position -1: a CUDA graph bucket's unused slots) among them.
TEST(AttentionGpu, MixedDecodeAndPrefillBatchesMatchTheTwin) {
  REQUIRE_GPU();
  for (const Shape sh : {Shape{64, 32, 8, 16}, Shape{128, 12, 2, 16}, Shape{128, 28, 4, 16}, Shape{128, 18, 2, 16},
                         Shape{64, 32, 2, 16}}) {
    std::mt19937 rng(sh.num_qo_heads);
    std::vector<Seq> seqs;
    for (int i = 0; i < 40; ++i) {
      if (i % 9 == 4) {
        seqs.push_back({1, 0});
      } else if (rng() % 5 < 3) {
        seqs.push_back({1, 1 + int32_t(rng() % 3000)});
      } else {
        const int32_t q_len = 2 + int32_t(rng() % 79), prefix = rng() % 2 ? int32_t(rng() % 1500) : 0;
        seqs.push_back({q_len, prefix + q_len});
      }
    }
    Problem p = make_problem(sh, seqs, 3000 + sh.num_qo_heads);
    check_against_twin("mixed 40 seqs " + describe(sh), p);
  }
}

// The wgmma prefill kernel (FLINT_ATTN_PREFILL=wgmma, sm_90a; attention_prefill.cu) against the mma.sync one, bit
// for bit: the same tiles, softmax and P, and each wgmma k16 step adds the same products onto the same accumulator
// as an mma.sync step (on the H200 they round alike: the wgmma matmul's tests). Head dims 64 and 128 (P·V as
// m64n64k16 and m64n128k16), GQA ratios 1, 4 and 7, short and long prompts, a cached prefix plus a chunk, block
// size 8 (a K/V tile across cache blocks), decode sequences in the same call; and against the twin.
TEST(AttentionGpu, PrefillWgmmaKernelGivesTheMmaKernelsBits) {
  REQUIRE_GPU();
  if (!attention_prefill_wgmma_available()) GTEST_SKIP() << "the wgmma prefill kernel needs sm_90a code and device";
  const AttentionKernels saved = attention_kernels();
  uint32_t seed = 6000;
  for (int32_t hd : {64, 128})
    for (int32_t ratio : {1, 4, 7})
      for (int32_t bs : {16, 8}) {
        if (bs == 8 && ratio != 4) continue;
        const Shape sh = gqa_shape(hd, ratio, bs);
        Problem p = make_problem(sh, {{2, 2}, {17, 17}, {65, 65}, {200, 200}, {40, 300}, {1, 100}}, seed += 10,
                                 /*q_pad=*/8, /*out_pad=*/8);
        set_attention_kernels({saved.decode_mma, false});
        const std::vector<bf16_bits> mma = run_gpu(p);
        set_attention_kernels({saved.decode_mma, true});
        const std::vector<bf16_bits> wgmma = run_gpu(p);
        size_t differ = 0;
        for (size_t i = 0; i < mma.size(); ++i) differ += mma[i] != wgmma[i];
        EXPECT_EQ(differ, 0u) << describe(sh) << ": " << differ << " output values differ between the kernels";
        summary_add("attn.prefill_wgmma.bits", double(differ), double(differ));
        expect_close_to_twin("prefill wgmma " + describe(sh), p, wgmma, attn_test::run_twin(p));
      }
  set_attention_kernels(saved);
}

// A cached prefix plus a new chunk (prefix caching, chunked prefill): the chunk's queries read the prefix's keys
// through the block table, including a chunk on an 8191-token cache.
TEST(AttentionGpu, CachedPrefixPlusNewChunkMatchesTheTwin) {
  REQUIRE_GPU();
  for (const Shape sh : {Shape{128, 12, 2, 16}, Shape{64, 24, 8, 32}}) {
    Problem p = make_problem(sh, {{191, 8191}, {17, 1000}, {64, 129}, {3, 16}, {16, 17}, {1, 8191}}, 4000 + sh.head_dim);
    check_against_twin("prefix + chunk " + describe(sh), p);
  }
}

// One-hot softmax (tests/attention_problem.h): every output row is its chosen key's V row, bit for bit. Decode
// sequences choose a random key (in the first, a middle or the last split of an 8191-token cache); prefill tokens
// choose their own position's key.
TEST(AttentionGpu, OneHotSoftmaxGivesTheKeysValueRowExactly) {
  REQUIRE_GPU();
  for (const int32_t hd : {64, 128}) {
    const Shape sh{hd, 16, 2, 16};
    Problem p = make_problem(sh, {{1, 1}, {1, 17}, {1, 8191}, {1, 8191}, {1, 8191}, {1, 300}, {50, 50}, {9, 700}}, 5000 + hd);
    std::mt19937 rng(hd);
    std::vector<int32_t> spike;
    for (const Seq& s : p.seqs) spike.push_back(int32_t(rng() % uint32_t(s.kv_len)));
    spike[2] = 5, spike[3] = 4100, spike[4] = 8190;
    auto key_of = [&](int32_t s, int32_t t) { return p.seqs[size_t(s)].q_len == 1 ? spike[size_t(s)] : p.positions[size_t(t)]; };
    const double gap = attn_test::make_one_hot(p, 6, key_of);
    ASSERT_GE(gap, 30.0) << "the construction did not make the softmax one-hot";
    const std::vector<bf16_bits> out = run_gpu(p);
    int bad[2] = {0, 0};
    for (int32_t t = 0; t < p.num_tokens; ++t) {
      const int32_t s = p.seq_of_token(t);
      for (int32_t h = 0; h < sh.num_qo_heads; ++h) {
        const int64_t off = p.kv_offset(s, key_of(s, t), h / sh.group());
        const bool same = std::memcmp(&out[size_t(t * p.ld_out + h * hd)], &p.v[size_t(off)], size_t(hd) * 2) == 0;
        if (!same && bad[p.seqs[size_t(s)].q_len == 1 ? 0 : 1]++ == 0)
          ADD_FAILURE() << "hd " << hd << " token " << t << " (sequence " << s << ") head " << h << ": not key "
                        << key_of(s, t) << "'s V row";
      }
    }
    summary_add("onehot.decode", bad[0] ? INFINITY : 0, 0);
    summary_add("onehot.prefill", bad[1] ? INFINITY : 0, 0);
    std::printf("  one-hot hd%-4d decode rows wrong: %d, prefill rows wrong: %d (min score gap %.1f)\n", hd, bad[0],
                bad[1], gap);
  }
}

// The same logical cache at other strides ([block][slot][head][dim], padded between slots and blocks).
TEST(AttentionGpu, ExplicitCacheStridesMatchTheTwin) {
  REQUIRE_GPU();
  const Shape sh{128, 8, 2, 16};
  Problem p = make_problem(sh, {{1, 1}, {1, 700}, {33, 33}, {5, 140}}, 6000);
  const std::vector<bf16_bits> twin = attn_test::run_twin(p);  // in make_paged_kv_cache's layout
  PagedKvCache odd = p.cache();
  odd.slot_stride = int64_t(sh.num_kv_heads) * sh.head_dim + 8;
  odd.head_stride = sh.head_dim;
  odd.block_stride = odd.slot_stride * sh.block_size + 24;
  std::vector<bf16_bits> k(size_t(odd.block_stride) * p.num_blocks, kNanBf16), v(k.size(), kNanBf16);
  const PagedKvCache c = p.cache();
  for (int32_t b = 0; b < p.num_blocks; ++b)
    for (int32_t slot = 0; slot < sh.block_size; ++slot)
      for (int32_t h = 0; h < sh.num_kv_heads; ++h)
        for (int32_t i = 0; i < sh.head_dim; ++i) {
          k[size_t(odd.offset(b, slot, h) + i)] = p.k[size_t(c.offset(b, slot, h) + i)];
          v[size_t(odd.offset(b, slot, h) + i)] = p.v[size_t(c.offset(b, slot, h) + i)];
        }
  DeviceCopy dk(k), dv(v), q(p.q), cu(p.cu_seqlens), kv_lens(p.kv_lens), table(p.block_table), pos(p.positions);
  DeviceBuffer out(size_t(p.num_tokens) * p.ld_out * 2);
  DeviceBuffer ws(attention_workspace_bytes(int32_t(p.seqs.size()), sh.num_qo_heads, sh.head_dim, p.max_kv_len));
  SplitCounters counters(int32_t(p.seqs.size()), sh.num_qo_heads, p.max_kv_len);
  AttentionParams a = attn_test::attention_params(p, out.as<bf16_bits>(), ws.as<void>(), ws.bytes());
  a.split_counters = counters.as<int32_t>(), a.num_split_counters = counters.count;
  a.cache = odd, a.cache.k = dk.as<bf16_bits>(), a.cache.v = dv.as<bf16_bits>(), a.q = q.as<bf16_bits>();
  a.batch.cu_seqlens = cu.as<int32_t>(), a.batch.kv_lens = kv_lens.as<int32_t>();
  a.batch.block_table = table.as<int32_t>(), a.batch.positions = pos.as<int32_t>();
  out.poison(), ws.poison();
  std::string why;
  ASSERT_EQ(paged_attention(a, nullptr, &why), cudaSuccess) << why;
  CUDA_CHECK(cudaDeviceSynchronize());
  expect_close_to_twin("slot-major padded cache " + describe(sh), p, out.download<bf16_bits>(size_t(p.num_tokens) * p.ld_out), twin);
}

// The problem of sequence s alone: its queries, its block-table row, the same cache.
Problem alone(const Problem& p, int32_t s) {
  Problem one = p;
  const Seq seq = p.seqs[size_t(s)];
  const int32_t t0 = p.cu_seqlens[size_t(s)];
  one.seqs = {seq}, one.cu_seqlens = {0, seq.q_len}, one.kv_lens = {seq.kv_len};
  one.block_table.assign(p.block_table.begin() + s * p.max_blocks_per_seq, p.block_table.begin() + (s + 1) * p.max_blocks_per_seq);
  one.positions.assign(p.positions.begin() + t0, p.positions.begin() + t0 + seq.q_len);
  one.q.assign(p.q.begin() + t0 * p.ld_q, p.q.begin() + (t0 + seq.q_len) * p.ld_q);
  one.num_tokens = one.max_q_len = seq.q_len, one.max_kv_len = seq.kv_len;
  return one;
}

// A prompt's last token computed alone, as a one-token prefill chunk over its cached prefix (a prefix-cache hit, or
// a chunk the token budget cut), gets the bits it gets as the last row of the whole prompt's prefill; beside a decode
// of one token (decode_seqs = 1), which keeps the decode kernel's bits. Fails if the one-token chunk goes to the
// decode kernel (whose arithmetic differs: fp32 weights for P·V, split-K over keys).
TEST(AttentionGpu, OneTokenPrefillChunkGetsTheWholePrefillsBits) {
  REQUIRE_GPU();
  for (const Shape sh : {Shape{128, 12, 2, 16}, Shape{64, 32, 8, 16}}) {
    for (const int32_t len : {17, 200, 1000}) {
      Problem whole = make_problem(sh, {{len, len}, {1, len}}, 9000 + uint32_t(len) + uint32_t(sh.head_dim));
      // The whole prompt, then a decode of its own (decode_seqs -1: told apart by query length).
      Problem chunk = whole;  // the prompt's last token alone, a prefill chunk, then the same decode
      chunk.seqs = {{1, len}, {1, len}};
      chunk.cu_seqlens = {0, 1, 2};
      chunk.positions = {len - 1, len - 1};
      chunk.q.assign(whole.q.begin() + (len - 1) * whole.ld_q, whole.q.end());
      chunk.num_tokens = 2, chunk.max_q_len = 1;
      chunk.decode_seqs = 1;
      chunk.block_table.assign(whole.block_table.begin(), whole.block_table.end());
      // Sequence 0 of `chunk` is a prefill chunk, sequence 1 a decode: put the decode first, as a step does.
      std::swap(chunk.kv_lens[0], chunk.kv_lens[1]);
      std::rotate(chunk.block_table.begin(), chunk.block_table.begin() + chunk.max_blocks_per_seq, chunk.block_table.end());
      std::rotate(chunk.q.begin(), chunk.q.begin() + chunk.ld_q, chunk.q.end());
      const std::vector<bf16_bits> a = run_gpu(whole), b = run_gpu(chunk);
      const size_t row = size_t(whole.ld_out);
      const bool prefill_same = std::equal(b.begin() + row, b.begin() + 2 * row, a.begin() + (len - 1) * row);
      const bool decode_same = std::equal(b.begin(), b.begin() + row, a.begin() + len * row);
      EXPECT_TRUE(prefill_same) << describe(sh) << " len " << len << ": the one-token chunk differs from the prefill's row";
      EXPECT_TRUE(decode_same) << describe(sh) << " len " << len << ": the decode differs beside a one-token chunk";
      summary_add("invariance", prefill_same && decode_same ? 0 : INFINITY, 0);
      expect_close_to_twin("one-token chunk " + describe(sh) + " len " + std::to_string(len), chunk, b,
                           attn_test::run_twin(chunk));
    }
  }
}

// Batch invariance, bit for bit: each sequence's output rows alone equal its rows inside the batch, and inside the
// batch launched with upper bounds for max_q_len and max_kv_len (a CUDA graph's bucket), on both paths.
TEST(AttentionGpu, SequenceOutputBitsDoNotDependOnTheBatch) {
  REQUIRE_GPU();
  for (const Shape sh : {Shape{128, 28, 4, 16}, Shape{64, 32, 8, 16}}) {
    Problem p = make_problem(sh, {{1, 8191}, {1, 129}, {37, 37}, {1, 1}, {1, 0}, {64, 2000}, {1, 500}, {200, 200}, {2, 2}},
                             7000 + sh.head_dim);
    const std::vector<bf16_bits> batch = run_gpu(p), bounded = run_gpu(p, p.num_tokens, 16384);
    const size_t row = size_t(p.ld_out) * 2;
    int differing = 0;
    for (int32_t s = 0; s < int32_t(p.seqs.size()); ++s) {
      const size_t t0 = size_t(p.cu_seqlens[size_t(s)]), n = size_t(p.seqs[size_t(s)].q_len);
      if (p.seqs[size_t(s)].kv_len == 0) {  // padding: its row stays poisoned in both launches
        const std::vector<bf16_bits> nan_row(size_t(p.ld_out), kNanBf16);
        EXPECT_EQ(0, std::memcmp(&batch[t0 * p.ld_out], nan_row.data(), row)) << "padding sequence " << s << " written";
        EXPECT_EQ(0, std::memcmp(&bounded[t0 * p.ld_out], nan_row.data(), row)) << "padding sequence " << s << " written";
        continue;
      }
      Problem one = alone(p, s);
      const std::vector<bf16_bits> solo = run_gpu(one);
      const bool same_alone = std::memcmp(solo.data(), &batch[t0 * p.ld_out], n * row) == 0;
      const bool same_bounded = std::memcmp(&bounded[t0 * p.ld_out], &batch[t0 * p.ld_out], n * row) == 0;
      EXPECT_TRUE(same_alone) << describe(sh) << " sequence " << s << " (q_len " << n << ", kv_len "
                              << p.seqs[size_t(s)].kv_len << "): alone differs from in the batch";
      EXPECT_TRUE(same_bounded) << describe(sh) << " sequence " << s << ": bounded launch differs";
      differing += !same_alone + !same_bounded;
    }
    summary_add("invariance", differing ? INFINITY : 0, 0);
    std::printf("  batch invariance %-24s %zu sequences, %d differ\n", describe(sh).c_str(), p.seqs.size(), differing);
  }
}

// RoPE + KV write against its twin: q in place, K normed and rotated into its slot, V copied; a padding token
// (position -1) is rotated and stores nothing. With qkv partials: q, k, v first finished from the QKV matmul's
// 3 split-K partial sums and its bias (the reduction fused in), the rest as before.
TEST(AttentionGpu, RopeWriteKvMatchesTheTwin) {
  REQUIRE_GPU();
  uint32_t seed = 8000;
  for (const int32_t hd : {64, 128})
    for (const RopeStyle style : {RopeStyle::Halves, RopeStyle::Interleaved})
      for (const int variant : {0, 1, 2}) {  // 0 plain, 1 q/k norm, 2 q/k norm from qkv partials
        const bool norm = variant > 0, parts = variant == 2;
        const Shape sh{hd, 14, 2, 16};
        const std::string what = "rope_kv hd" + std::to_string(hd) + (style == RopeStyle::Halves ? " halves" : " interleaved") +
                                 (norm ? " q/k norm" : "") + (parts ? " from qkv partials" : "");
        Problem p = make_problem(sh, {{1, 40}, {20, 20}, {1, 0}, {5, 300}, {1, 8000}, {64, 64}}, seed += 10, /*q_pad=*/8);
        const int32_t n = p.num_tokens, nkv = sh.num_kv_heads;
        const int64_t ld_k = int64_t(nkv) * hd + 8, ld_v = int64_t(nkv) * hd + 16;
        const std::vector<bf16_bits> k_in = random_bf16(size_t(n * ld_k), seed + 1), v_in = random_bf16(size_t(n * ld_v), seed + 2);
        const std::vector<bf16_bits> q_norm = random_bf16(size_t(hd), seed + 3, 0.5f, 1.5f);
        const std::vector<bf16_bits> k_norm = random_bf16(size_t(hd), seed + 4, 0.5f, 1.5f);
        std::vector<float> inv_freq(size_t(hd / 2));
        for (int32_t i = 0; i < hd / 2; ++i) inv_freq[size_t(i)] = std::pow(500000.0f, -float(2 * i) / float(hd));
        const int32_t splits = 3;
        const int64_t cols = int64_t(sh.num_qo_heads + 2 * nkv) * hd;
        std::vector<float> qkv_parts(parts ? size_t(splits) * n * cols : 0);
        std::mt19937 prng(seed + 5);
        std::normal_distribution<float> pdist(0.0f, 0.7f);
        for (float& f : qkv_parts) f = pdist(prng);
        const std::vector<bf16_bits> qkv_bias = random_bf16(size_t(cols), seed + 6);
        RopeKvParams r;
        r.ld_q = p.ld_q, r.ld_k = ld_k, r.ld_v = ld_v, r.num_qo_heads = sh.num_qo_heads, r.style = style;
        r.norm_eps = 1e-6f;
        if (parts) r.qkv_splits = splits;
        // The twin on host copies.
        Problem want = p;
        RopeKvParams h = r;
        h.cache = want.cache(), h.batch = want.batch(), h.q = want.q.data(), h.k = k_in.data(), h.v = v_in.data();
        h.inv_freq = inv_freq.data();
        if (norm) h.maybe_q_norm = q_norm.data(), h.maybe_k_norm = k_norm.data();
        if (parts) h.maybe_qkv_partials = qkv_parts.data(), h.maybe_qkv_bias = qkv_bias.data();
        cpu::rope_write_kv_bf16(h);
        // The kernel on device copies of the same inputs.
        DeviceCopy dk(p.k), dv(p.v), dq(p.q), dk_in(k_in), dv_in(v_in), dqn(q_norm), dkn(k_norm), dfreq(inv_freq);
        DeviceCopy dparts(parts ? qkv_parts : std::vector<float>(1)), dbias(qkv_bias);
        DeviceCopy cu(p.cu_seqlens), kv_lens(p.kv_lens), table(p.block_table), pos(p.positions);
        RopeKvParams d = r;
        d.cache = p.cache(), d.cache.k = dk.as<bf16_bits>(), d.cache.v = dv.as<bf16_bits>();
        d.batch = p.batch(), d.batch.cu_seqlens = cu.as<int32_t>(), d.batch.kv_lens = kv_lens.as<int32_t>();
        d.batch.block_table = table.as<int32_t>(), d.batch.positions = pos.as<int32_t>();
        d.q = dq.as<bf16_bits>(), d.k = dk_in.as<bf16_bits>(), d.v = dv_in.as<bf16_bits>(), d.inv_freq = dfreq.as<float>();
        if (norm) d.maybe_q_norm = dqn.as<bf16_bits>(), d.maybe_k_norm = dkn.as<bf16_bits>();
        if (parts) d.maybe_qkv_partials = dparts.as<float>(), d.maybe_qkv_bias = dbias.as<bf16_bits>();
        std::string why;
        ASSERT_EQ(rope_write_kv(d, nullptr, &why), cudaSuccess) << why;
        CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<bf16_bits> got_q = dq.download<bf16_bits>(p.q.size()), got_k = dk.download<bf16_bits>(p.k.size());
        const std::vector<bf16_bits> got_v = dv.download<bf16_bits>(p.v.size());
        // Per head of hd values: tolerance where the twin rotated (q heads, written K slots), bits elsewhere.
        double worst = 0, worst_abs = 0;
        int bad = 0;
        // `len` values from g and w: a head (hd) or a row's padding (shorter, the last thing in q's array).
        auto compare_head = [&](const bf16_bits* g, const bf16_bits* w, bool rotated, const std::string& where,
                                int64_t len) {
          float mx = 0;
          for (int64_t i = 0; i < len; ++i) mx = std::max(mx, std::fabs(bf16_bits_to_f32(w[i])));
          for (int64_t i = 0; i < len; ++i) {
            const double gv = bf16_bits_to_f32(g[i]), wv = bf16_bits_to_f32(w[i]);
            const double tol = rotated ? std::ldexp(double(mx), -14) + std::ldexp(std::fabs(wv), -7) : 0.0;
            const double err = std::fabs(gv - wv);
            const bool ok = rotated ? err <= tol : g[i] == w[i];
            if (!ok) {
              if (bad++ < 3) ADD_FAILURE() << what << ": " << where << " dim " << i << ": gpu " << gv << ", twin " << wv;
              continue;
            }
            if (rotated) worst = std::max(worst, err / tol), worst_abs = std::max(worst_abs, err);
          }
        };
        for (int32_t t = 0; t < n; ++t)
          for (int64_t i0 = 0; i0 < p.ld_q; i0 += hd)  // the padding (8 values) compared as a short "head" of bits
            compare_head(&got_q[size_t(t * p.ld_q + i0)], &want.q[size_t(t * p.ld_q + i0)], i0 < p.width(),
                         "q token " + std::to_string(t) + " at " + std::to_string(i0), std::min<int64_t>(hd, p.ld_q - i0));
        std::vector<bool> written(size_t(p.num_blocks) * sh.block_size, false);
        for (int32_t t = 0; t < n; ++t) {
          const int32_t pos_t = p.positions[size_t(t)];
          if (pos_t < 0) continue;  // padding: rotated, not stored
          const int32_t block = p.block_table[size_t(p.seq_of_token(t) * p.max_blocks_per_seq + pos_t / sh.block_size)];
          written[size_t(block * sh.block_size + pos_t % sh.block_size)] = true;
        }
        const PagedKvCache c = p.cache();
        for (int32_t b = 0; b < p.num_blocks; ++b)
          for (int32_t slot = 0; slot < sh.block_size; ++slot)
            for (int32_t kvh = 0; kvh < nkv; ++kvh) {
              const size_t off = size_t(c.offset(b, slot, kvh));
              const std::string where = "block " + std::to_string(b) + " slot " + std::to_string(slot);
              compare_head(&got_k[off], &want.k[off], written[size_t(b * sh.block_size + slot)], "k " + where, hd);
              compare_head(&got_v[off], &want.v[off], false, "v " + where, hd);
            }
        summary_add("rope_kv", bad ? INFINITY : worst, worst_abs);
        EXPECT_EQ(bad, 0) << what;
        std::printf("  %-52s %-12s max |err| %.3g = %.3f of tolerance\n", what.c_str(), "rope_kv", worst_abs, worst);
      }
}

// The launchers' checks run before anything touches the GPU, so this runs everywhere.
TEST(AttentionGpu, LaunchersRejectBadParamsWithAReason) {
  Problem p = make_problem(Shape{128, 8, 2, 16}, {{1, 300}, {4, 4}}, 9000);
  AttentionParams a = attn_test::attention_params(p, reinterpret_cast<bf16_bits*>(0x2000), nullptr, 0);
  std::string why;
  EXPECT_EQ(paged_attention(a, nullptr, &why), cudaErrorInvalidValue);  // 300 keys: a workspace is needed
  EXPECT_NE(why.find("needs a workspace of"), std::string::npos) << why;
  a.workspace = reinterpret_cast<void*>(0x3000), a.workspace_bytes = size_t(1) << 30;
  a.cache.head_dim = 96;
  EXPECT_EQ(paged_attention(a, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("head_dim 96 is not supported"), std::string::npos) << why;
  a.cache.head_dim = 128, a.num_qo_heads = 7;
  EXPECT_EQ(paged_attention(a, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("positive multiple of num_kv_heads"), std::string::npos) << why;
  // The launcher's own limits, past the shared validation.
  a.num_qo_heads = 8, a.workspace_bytes = size_t(1) << 40;
  EXPECT_EQ(paged_attention(a, nullptr, &why), cudaErrorInvalidValue);  // 300 keys: split counters too
  EXPECT_NE(why.find("needs 16 split counters"), std::string::npos) << why;
  a.split_counters = reinterpret_cast<int32_t*>(0x4000), a.num_split_counters = 15;
  EXPECT_EQ(paged_attention(a, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("got 15"), std::string::npos) << why;
  a.num_split_counters = 16;
  a.l2_ahead_bytes = -1;
  EXPECT_EQ(paged_attention(a, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("l2_ahead_bytes"), std::string::npos) << why;
  a.l2_ahead_bytes = 0;
  const AttentionParams valid = a;
  a.q = p.q.data() + 1;  // 2 bytes off
  EXPECT_EQ(paged_attention(a, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("16-byte aligned"), std::string::npos) << why;
  a = valid, a.batch.num_seqs = a.batch.num_tokens = 70000;
  EXPECT_EQ(paged_attention(a, nullptr, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("at most 65535 sequences"), std::string::npos) << why;
  // (No limit on max_kv_len any more: a sequence has at most kAttnMaxSplits splits, whatever its length.)
  RopeKvParams r;
  r.cache = p.cache(), r.batch = p.batch(), r.q = p.q.data(), r.ld_q = p.ld_q, r.k = p.q.data(), r.ld_k = 256;
  r.v = p.q.data(), r.ld_v = 256, r.num_qo_heads = 8;
  EXPECT_EQ(rope_write_kv(r, nullptr, &why), cudaErrorInvalidValue);  // no inv_freq
  EXPECT_NE(why.find("inv_freq must not be null"), std::string::npos) << why;
}

}  // namespace
}  // namespace flint::cuda
