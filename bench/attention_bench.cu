// attention_bench: Flint's paged attention (kernels/cuda/attention.h, the production launcher) on the heads of
// Llama-3.2-1B, Qwen2.5-1.5B and Qwen2.5-7B: decode at batch {1, 16, 64, 256} × context {512, 4096, 32768} as GB/s
// and % of the copy ceiling measured in this run, prefill at {512, 2048, 8192} tokens as TFLOP/s. Prints a table,
// issue 5's decode target as PASS/MISS per shape, and JSON with --json; the prefill target (>= 1.0x torch SDPA) is
// judged by bench/attention_vs_torch.py from this JSON and torch_baselines.py's, both written by scripts/gpu-check.sh.
//
// What is timed: `paged_attention(p, stream)` as the engine will call it: the decode kernel (which merges its splits)
// (one query token per sequence), or the prefill kernel (batch 1, causal, the whole prompt). The cache is bf16 in
// make_paged_kv_cache's layout, block size 16, each sequence's blocks at random places (a shuffled permutation, as
// a cache looks after churn). Inputs random in [-1, 1); outputs poisoned before the first call and checked finite.
// Decode bytes counted: K and V read once (2·batch·kv_heads·context·head_dim·2) plus q read and out written
// (2·batch·heads·head_dim·2), as torch_baselines.py counts SDPA decode; the block table and the split partials are
// overhead, not counted. Prefill FLOPs: 4·L²·heads·head_dim / 2 (QKᵀ and PV, halved by the causal mask).
// Cache copies are rotated until together they span 3× L2, so L2 serves none of the K/V a call reads.
#include <algorithm>
#include <numeric>
#include <random>

#include "bench/gpu_bench_common.cuh"
#include "kernels/cuda/attention.h"

namespace {

using flint::AttentionParams;
using flint::bf16_bits;

struct Options {
  std::string json_path;
  bool quick = false;
  double mem_fraction = 0.6;  // shapes whose buffers pass this share of free memory are skipped
  ProfileOptions profile;  // --only keys: model:decode:batch:ctx, model:prefill:L (else every shape)
  int warmup() const { return profile.warmup_n >= 0 ? profile.warmup_n : quick ? 2 : 5; }
  int reps() const { return profile.reps_n >= 1 ? profile.reps_n : quick ? 10 : 40; }
};

constexpr int kDecodeBatches[] = {1, 16, 64, 256};
constexpr int kDecodeContexts[] = {512, 4096, 32768};
constexpr int kPrefillLengths[] = {512, 2048, 8192};
constexpr int kBlockSize = 16;
const char* const kBenchModels[] = {"Llama-3.2-1B", "Qwen2.5-1.5B", "Qwen2.5-7B"};

struct Pick {
  const ModelShape* model;
  bool decode;
  int batch, ctx;  // prefill: batch 1, ctx = L
};

// The shapes to run: --only's, in its order, or every decode shape then every prefill one. False (with why) on a
// key naming no shape.
bool pick_shapes(const std::string& only, std::vector<Pick>& picks, std::string& why) {
  auto benched = [](const ModelShape& m) {
    return std::find_if(std::begin(kBenchModels), std::end(kBenchModels),
                        [&](const char* n) { return std::strcmp(n, m.name) == 0; }) != std::end(kBenchModels);
  };
  if (only.empty()) {
    for (const ModelShape& m : kModels)
      if (benched(m))
        for (int batch : kDecodeBatches)
          for (int ctx : kDecodeContexts) picks.push_back({&m, true, batch, ctx});
    for (const ModelShape& m : kModels)
      if (benched(m))
        for (int L : kPrefillLengths) picks.push_back({&m, false, 1, L});
    return true;
  }
  for (const std::string& key : split_on(only, ',')) {
    const std::vector<std::string> f = split_on(key, ':');
    const ModelShape* m = f.size() >= 3 ? model_named(f[0]) : nullptr;
    const bool decode = f.size() == 4 && f[1] == "decode", prefill = f.size() == 3 && f[1] == "prefill";
    const int batch = decode ? positive_field(f[2]) : 1, ctx = positive_field(f.back());
    if (!m || !(decode || prefill) || batch < 1 || batch > 4096 || ctx < 1 || ctx > 131072) {
      why = "--only: \"" + key + "\" is neither model:decode:batch:ctx nor model:prefill:L (a model of kModels, "
            "batch <= 4096, ctx and L <= 131072)";
      return false;
    }
    picks.push_back({m, decode, batch, ctx});
  }
  return true;
}

struct Result {
  std::string model, mode;  // mode: decode or prefill
  int heads = 0, kv_heads = 0, head_dim = 0, batch = 0, ctx = 0, copies = 0;
  double bytes = 0, kv_bytes = 0, flops = 0, us = 0, min_us = 0;
  bool ran = false, finite = false;
  std::string skipped;
};

class AttentionBench {
 public:
  AttentionBench(const Options& opt, const Card& card) : opt_(opt), card_(card), stream_(make_stream()), timer_(stream_) {
    CUDA_CHECK(cudaMalloc(&counter_, sizeof(unsigned long long)));
  }
  ~AttentionBench() {
    cudaFree(counter_);
    cudaStreamDestroy(stream_);
  }
  AttentionBench(const AttentionBench&) = delete;
  AttentionBench& operator=(const AttentionBench&) = delete;

  CopyCeiling copy;
  bool hold_timed_out() const { return timer_.hold_timed_out; }
  void measure_ceiling() { copy = measure_copy_ceiling(timer_, stream_, card_, opt_.quick ? 5 : 20); }

  // batch sequences of ctx keys each; q_len 1 (decode) or ctx (prefill, batch 1).
  Result measure(const ModelShape& m, int batch, int ctx, bool decode, uint64_t seed) {
    Result r;
    r.model = m.name, r.mode = decode ? "decode" : "prefill", r.heads = m.num_heads, r.kv_heads = m.num_kv_heads;
    r.head_dim = m.head_dim, r.batch = batch, r.ctx = ctx;
    const int hd = m.head_dim, q_len = decode ? 1 : ctx, tokens = batch * q_len;
    const int blocks_per_seq = (ctx + kBlockSize - 1) / kBlockSize, num_blocks = batch * blocks_per_seq;
    const size_t cache_bytes = size_t(num_blocks) * kBlockSize * m.num_kv_heads * hd * 2;  // one of K, V
    const size_t q_bytes = size_t(tokens) * m.num_heads * hd * 2;
    r.kv_bytes = 2.0 * double(cache_bytes);
    r.bytes = r.kv_bytes + 2.0 * double(q_bytes);
    r.flops = decode ? 4.0 * batch * double(ctx) * m.num_heads * hd : 4.0 * double(ctx) * ctx * m.num_heads * hd / 2;
    const size_t ws_bytes = flint::attention_workspace_bytes(batch, m.num_heads, hd, ctx);
    const size_t per_copy = 2 * align_up(cache_bytes) + align_up(q_bytes) + align_up(size_t(batch) * blocks_per_seq * 4);
    size_t copies = std::max<size_t>(1, (3 * card_.l2_bytes + 2 * cache_bytes - 1) / (2 * cache_bytes));
    size_t free_bytes = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    const double budget = opt_.mem_fraction * double(free_bytes);
    const size_t counters = flint::attention_split_counters(batch, m.num_heads, ctx);
    const size_t fixed =
        align_up(q_bytes) + align_up(ws_bytes) + 4 * align_up(size_t(tokens + batch + 1) * 4) + align_up(counters * 4);
    if (double(copies * per_copy + fixed) > budget) copies = 1;
    if (double(per_copy + fixed) > budget) {
      char why[96];
      std::snprintf(why, sizeof why, "needs %.1f GB, over %.0f%% of %.1f GB free", (per_copy + fixed) / 1e9,
                    100 * opt_.mem_fraction, free_bytes / 1e9);
      r.skipped = why;
      return r;
    }
    r.copies = int(copies);

    // Pool: per copy K, V, q and a block table; then out, cu_seqlens, kv_lens, positions, workspace.
    char* pool = nullptr;
    CUDA_CHECK(cudaMalloc(&pool, copies * per_copy + fixed));
    auto K = [&](size_t c) { return pool + c * per_copy; };
    auto V = [&](size_t c) { return K(c) + align_up(cache_bytes); };
    auto Q = [&](size_t c) { return V(c) + align_up(cache_bytes); };
    auto T = [&](size_t c) { return reinterpret_cast<int32_t*>(Q(c) + align_up(q_bytes)); };
    char* tail = pool + copies * per_copy;
    bf16* out = reinterpret_cast<bf16*>(tail);
    int32_t* cu = reinterpret_cast<int32_t*>(tail + align_up(q_bytes));
    int32_t* kv_lens = cu + align_up(size_t(tokens + batch + 1) * 4) / 4;
    int32_t* positions = kv_lens + align_up(size_t(tokens + batch + 1) * 4) / 4;
    void* workspace = positions + align_up(size_t(tokens + batch + 1) * 4) / 4;
    int32_t* split_counters = reinterpret_cast<int32_t*>(static_cast<char*>(workspace) + align_up(ws_bytes));
    CUDA_CHECK(cudaMemsetAsync(split_counters, 0, counters * 4, stream_));  // zero once; each call leaves them zero

    std::vector<int32_t> h_cu(size_t(batch) + 1), h_kv(size_t(batch), ctx), h_pos(static_cast<size_t>(tokens));
    for (int s = 0; s <= batch; ++s) h_cu[size_t(s)] = s * q_len;
    for (int t = 0; t < tokens; ++t) h_pos[size_t(t)] = decode ? ctx - 1 : t;
    CUDA_CHECK(cudaMemcpyAsync(cu, h_cu.data(), h_cu.size() * 4, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaMemcpyAsync(kv_lens, h_kv.data(), h_kv.size() * 4, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaMemcpyAsync(positions, h_pos.data(), h_pos.size() * 4, cudaMemcpyHostToDevice, stream_));
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::vector<int32_t> table(static_cast<size_t>(num_blocks));
    for (size_t c = 0; c < copies; ++c) {
      fill(reinterpret_cast<bf16*>(K(c)), cache_bytes / 2, seed + 10 * c, stream_, card_.sms);
      fill(reinterpret_cast<bf16*>(V(c)), cache_bytes / 2, seed + 10 * c + 1, stream_, card_.sms);
      fill(reinterpret_cast<bf16*>(Q(c)), q_bytes / 2, seed + 10 * c + 2, stream_, card_.sms);
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), rng);
      CUDA_CHECK(cudaMemcpyAsync(T(c), table.data(), table.size() * 4, cudaMemcpyHostToDevice, stream_));
      CUDA_CHECK(cudaStreamSynchronize(stream_));  // table is reused for the next copy
    }
    CUDA_CHECK(cudaMemsetAsync(out, 0xFF, q_bytes, stream_));  // bf16 NaN: an unwritten output stays non-finite

    auto params = [&](size_t c) {
      AttentionParams p;
      p.cache = flint::make_paged_kv_cache(reinterpret_cast<bf16_bits*>(K(c)), reinterpret_cast<bf16_bits*>(V(c)),
                                           num_blocks, kBlockSize, m.num_kv_heads, hd);
      p.batch.cu_seqlens = cu, p.batch.kv_lens = kv_lens, p.batch.block_table = T(c);
      p.batch.max_blocks_per_seq = blocks_per_seq, p.batch.positions = positions;
      p.batch.num_seqs = batch, p.batch.num_tokens = tokens, p.batch.max_q_len = q_len, p.batch.max_kv_len = ctx;
      p.q = reinterpret_cast<const bf16_bits*>(Q(c)), p.ld_q = int64_t(m.num_heads) * hd;
      p.out = reinterpret_cast<bf16_bits*>(out), p.ld_out = p.ld_q;
      p.num_qo_heads = m.num_heads, p.scale = 1.0f / std::sqrt(float(hd));
      p.workspace = workspace, p.workspace_bytes = ws_bytes;
      p.split_counters = split_counters, p.num_split_counters = counters;
      return p;
    };
    auto run = [&](size_t c) {
      std::string why;
      const cudaError_t e = flint::cuda::paged_attention(params(c), stream_, &why);
      if (e != cudaSuccess) {
        std::fprintf(stderr, "paged_attention %s %s batch %d ctx %d failed: %s %s\n", m.name, r.mode.c_str(), batch,
                     ctx, cudaGetErrorName(e), why.c_str());
        std::exit(2);
      }
    };
    run(0);
    CUDA_CHECK(cudaMemsetAsync(counter_, 0, sizeof(unsigned long long), stream_));
    count_nonfinite<<<card_.sms * 4, 256, 0, stream_>>>(out, q_bytes / 2, counter_);
    LAUNCH_CHECK();
    unsigned long long nonfinite = 0;
    CUDA_CHECK(cudaMemcpyAsync(&nonfinite, counter_, sizeof nonfinite, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    r.finite = nonfinite == 0;
    const auto us = timer_.run(opt_.warmup(), opt_.reps(), [&](int i) { run(size_t(i) % copies); });
    r.us = median(us), r.min_us = us.front(), r.ran = true;
    CUDA_CHECK(cudaFree(pool));
    return r;
  }

 private:
  static cudaStream_t make_stream() {
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }
  const Options& opt_;
  const Card& card_;
  cudaStream_t stream_ = nullptr;
  Timer timer_;
  unsigned long long* counter_ = nullptr;
};

// Issue 5's decode target: >= 80% of the measured bandwidth (the copy ceiling) at context >= 4096, batch 1 included.
bool decode_target(const Result& r) { return r.mode == "decode" && r.ctx >= 4096; }
double gbps(const Result& r) { return r.bytes / r.us / 1e3; }
double tflops(const Result& r) { return r.flops / r.us / 1e6; }

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      opt.quick = true;
    } else if (a == "--json" && i + 1 < argc) {
      opt.json_path = argv[++i];
    } else if (bool bad = false; opt.profile.parse(argc, argv, i, bad)) {
      if (bad) return 2;
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--json PATH] [--only MODEL:decode:BATCH:CTX|MODEL:prefill:L,...] [--reps W,R] [--no-ceilings]\n%s",
                   argv[0], ProfileOptions::kUsage);
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  std::vector<Pick> picks;
  if (std::string why; !pick_shapes(opt.profile.only, picks, why)) {
    std::fprintf(stderr, "%s\n", why.c_str());
    return 2;
  }
  const Card card = read_card();
  std::printf("== card: %s  cc %d.%d  %d SMs  L2 %.1f MiB  %.1f GiB  driver %d  runtime %d%s\n", card.name.c_str(),
              card.cc_major, card.cc_minor, card.sms, card.l2_bytes / 1048576.0, card.mem_bytes / 1073741824.0,
              card.driver, card.runtime, opt.quick ? "  (quick)" : "");
  std::fflush(stdout);
  AttentionBench bench(opt, card);
  if (!opt.profile.no_ceilings) bench.measure_ceiling();
  const double copy_gbps = bench.copy.gbps();
  if (opt.profile.no_ceilings)
    std::printf("== copy ceiling not measured (--no-ceilings): %%copy reads 0\n");
  else
    std::printf("== copy ceiling %.0f GB/s (memcpy %.0f, copy16 %.0f)%s\n", copy_gbps, bench.copy.memcpy_gbps,
                bench.copy.kernel_gbps, bench.copy.ok ? "" : " FAIL: copy wrong");
  auto pct = [&](double v) { return copy_gbps > 0 ? 100 * v / copy_gbps : 0.0; };

  std::vector<Result> results;
  uint64_t seed = 9000;
  std::printf("== decode: 1 query token per sequence, block size 16, shuffled blocks; bytes = K + V + q + out\n"
              "%-13s %5s %6s %9s %6s %9s %9s %7s %6s %s\n", "model", "batch", "ctx", "KV MB", "copies", "us", "min_us",
              "GB/s", "%copy", "check");
  for (const Pick& pk : picks) {
    if (!pk.decode) continue;
    const Result r = bench.measure(*pk.model, pk.batch, pk.ctx, true, seed += 100);
    results.push_back(r);
    if (!r.ran) {
      std::printf("%-13s %5d %6d %9.1f skipped: %s\n", pk.model->name, pk.batch, pk.ctx, r.kv_bytes / 1e6,
                  r.skipped.c_str());
    } else {
      std::printf("%-13s %5d %6d %9.1f %6d %9.1f %9.1f %7.0f %6.1f %s\n", pk.model->name, pk.batch, pk.ctx,
                  r.kv_bytes / 1e6, r.copies, r.us, r.min_us, gbps(r), pct(gbps(r)),
                  r.finite ? "ok" : "FAIL: non-finite");
    }
    std::fflush(stdout);
  }
  std::printf("== prefill: batch 1, causal, block size 16; FLOPs = 4·L²·heads·hd / 2\n%-13s %6s %9s %9s %8s %s\n",
              "model", "L", "us", "min_us", "TFLOP/s", "check");
  for (const Pick& pk : picks) {
    if (pk.decode) continue;
    const Result r = bench.measure(*pk.model, 1, pk.ctx, false, seed += 100);
    results.push_back(r);
    if (!r.ran) {
      std::printf("%-13s %6d skipped: %s\n", pk.model->name, pk.ctx, r.skipped.c_str());
    } else {
      std::printf("%-13s %6d %9.1f %9.1f %8.1f %s\n", pk.model->name, pk.ctx, r.us, r.min_us, tflops(r),
                  r.finite ? "ok" : "FAIL: non-finite");
    }
    std::fflush(stdout);
  }

  int ran = 0, finite = 0, targets = 0, met = 0;
  for (const Result& r : results) {
    ran += r.ran, finite += r.ran && r.finite;
    if (r.ran && decode_target(r)) ++targets, met += gbps(r) >= 0.8 * copy_gbps;
  }
  const bool pass = bench.copy.ok && ran > 0 && finite == ran;  // copy.ok stays true when not measured
  std::printf("\n## summary attention_bench\n%s: copy ceiling %.0f GB/s; %d/%zu shapes ran, %d with finite outputs%s\n"
              "issue 5 decode target: >= 80%% of the copy ceiling at context >= 4096 (prefill's, >= 1.0x torch SDPA, "
              "is judged by the attention_vs_torch step)\n%-13s %-7s %5s %6s %9s %8s %6s %s\n",
              card.name.c_str(), copy_gbps, ran, results.size(), finite,
              bench.hold_timed_out() ? "; WARNING: hold timed out" : "", "model", "mode", "batch", "ctx", "us",
              "rate", "%copy", "target");
  for (const Result& r : results) {
    if (!r.ran) {
      std::printf("%-13s %-7s %5d %6d skipped: %s\n", r.model.c_str(), r.mode.c_str(), r.batch, r.ctx, r.skipped.c_str());
      continue;
    }
    const bool dec = r.mode == "decode";
    std::printf("%-13s %-7s %5d %6d %9.1f %8.1f %6s %s\n", r.model.c_str(), r.mode.c_str(), r.batch, r.ctx, r.us,
                dec ? gbps(r) : tflops(r), dec ? std::to_string(int(std::lround(pct(gbps(r))))).c_str() : "-",
                decode_target(r) ? (gbps(r) >= 0.8 * copy_gbps ? "PASS" : "MISS") : "-");
  }
  std::printf("(rate: GB/s for decode, TFLOP/s for prefill)\ndecode targets met: %d/%d; attention_bench: %s\n", met,
              targets, pass ? "PASS" : "FAIL");

  if (!opt.json_path.empty()) {
    Json j;
    j.open(nullptr, '{').open("card", '{').text("name", card.name).num("cc", card.cc_major * 10 + card.cc_minor);
    j.num("sms", card.sms).num("l2_bytes", double(card.l2_bytes)).num("driver", card.driver).num("runtime", card.runtime);
    j.close('}');
    j.open("options", '{').boolean("quick", opt.quick).num("warmup", opt.warmup()).num("reps", opt.reps());
    j.num("block_size", kBlockSize).close('}');
    j.num("copy_gbps", copy_gbps).boolean("copy_ok", bench.copy.ok);
    j.open("shapes", '[');
    for (const Result& r : results) {
      j.open(nullptr, '{').text("model", r.model).text("mode", r.mode).num("heads", r.heads).num("kv_heads", r.kv_heads);
      j.num("head_dim", r.head_dim).num("batch", r.batch).num("ctx", r.ctx).num("bytes", r.bytes);
      j.num("kv_bytes", r.kv_bytes).num("flops", r.flops).boolean("ran", r.ran);
      if (r.ran) {
        j.num("copies", r.copies).num("us_median", r.us).num("us_min", r.min_us).num("gbps", gbps(r));
        j.num("tflops", tflops(r)).num("pct_copy", pct(gbps(r))).boolean("finite", r.finite);
        if (decode_target(r)) j.boolean("target_met", gbps(r) >= 0.8 * copy_gbps);
      } else {
        j.text("skipped", r.skipped);
      }
      j.close('}');
    }
    j.close(']').num("decode_targets", targets).num("decode_targets_met", met);
    j.boolean("hold_timed_out", bench.hold_timed_out()).boolean("pass", pass).close('}');
    FILE* f = std::fopen(opt.json_path.c_str(), "w");
    const bool written = f && std::fputs(j.str().c_str(), f) >= 0 && std::fputc('\n', f) != EOF;
    if (f) std::fclose(f);
    if (!written) {
      std::fprintf(stderr, "cannot write %s\n", opt.json_path.c_str());
      return 2;
    }
  }
  return pass ? 0 : 1;
}
