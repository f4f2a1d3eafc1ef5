// ops_bench: the small CUDA ops of the backend (kernels/cuda/ops.h, sampling.h), the production launchers, with
// the copy ceiling measured in the same run:
//   add_rmsnorm  rows × hidden (delta present): GB/s and % of copy. Bytes counted: x read and written and delta
//                read (fp32), out written (bf16), w read once: rows·hidden·14 + hidden·2.
//   sample       µs per call and per row at vocab 49152 and 151936, batch 1, 32, 256, five parameter mixes:
//                greedy; top-k 50 + top-p 0.9 (typical chat); top-p 0.95 alone; untruncated T = 1; each with the
//                chosen token's logprob; and greedy without it (the engine's device path asks for none). Logits are
//                normal with sd 3 (a few hundred tokens hold most of the mass; flat logits make top-p slower).
//                Each shape twice where the batch splits: a block per row ("sample") and the split sampler
//                ("sample.split", slices of at least 2048 ids), whose tokens must equal the first's.
//                Batch 1 at vocab 49152 (192 KB) stays in L2 between calls, as it does after the LM head.
//   dequantize   a 4096 × 4096 weight per type, at load: GB/s of source read + bf16 written.
// Every timed call is checked afterwards: token ids in [0, vocab), norm outputs finite.
#include <random>

#include "bench/gpu_bench_common.cuh"
#include "kernels/cpu/quant.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/sampling.h"

namespace {

using flint::AddRmsNormParams;
using flint::DequantParams;
using flint::DType;
using flint::SampleParams;
using flint::SampleRow;

struct Options {
  std::string json_path;
  bool quick = false;
  int warmup() const { return quick ? 2 : 5; }
  int reps() const { return quick ? 10 : 40; }
};

__global__ void fill_normal_f32(float* p, size_t n, uint64_t seed, float sd) {  // Box-Muller on hashed uniforms
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float u1 = (float(hash32(2 * i ^ seed) >> 8) + 1.0f) * (1.0f / 16777217.0f);
    const float u2 = float(hash32((2 * i + 1) ^ seed) >> 8) * (1.0f / 16777216.0f);
    p[i] = sd * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
  }
}

__global__ void count_bad_tokens(const int32_t* t, int n, int vocab, unsigned long long* bad) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    if (t[i] < 0 || t[i] >= vocab) atomicAdd(bad, 1ull);
}

unsigned long long device_count(auto&& launch, cudaStream_t s) {
  unsigned long long* c = nullptr;
  CUDA_CHECK(cudaMalloc(&c, sizeof *c));
  CUDA_CHECK(cudaMemsetAsync(c, 0, sizeof *c, s));
  launch(c);
  LAUNCH_CHECK();
  unsigned long long v = 0;
  CUDA_CHECK(cudaMemcpyAsync(&v, c, sizeof v, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  CUDA_CHECK(cudaFree(c));
  return v;
}

void check_launch(cudaError_t e, const std::string& why, const char* what) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "%s: %s %s\n", what, cudaGetErrorName(e), why.c_str());
  std::exit(2);
}

struct Row {
  std::string op, shape, mix;
  double us = 0, us_per_row = 0, gbps = 0, pct_copy = 0;
  bool ok = true;
  int blocks = 0;  // sample: blocks per row
};

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      opt.quick = true;
    } else if (a == "--json" && i + 1 < argc) {
      opt.json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--json PATH]\n", argv[0]);
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  const Card card = read_card();
  std::printf("== card: %s  cc %d.%d  %d SMs  L2 %.1f MiB%s\n", card.name.c_str(), card.cc_major, card.cc_minor,
              card.sms, card.l2_bytes / 1048576.0, opt.quick ? "  (quick)" : "");
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  Timer timer(stream);
  const CopyCeiling copy = measure_copy_ceiling(timer, stream, card, opt.quick ? 5 : 20);
  std::printf("== copy ceiling %.0f GB/s%s\n", copy.gbps(), copy.ok ? "" : " FAIL: copy wrong");
  std::vector<Row> rows;
  std::string why;

  // ---- add_rmsnorm: rotate over enough copies that the working set is twice L2 (at most 64 copies).
  std::printf("%-12s %-18s %9s %8s %6s %s\n", "op", "rows x hidden", "us", "GB/s", "%copy", "check");
  for (int hidden : {576, 2048, 4096, 8192})
    for (int n : {1, 32, 256, 2048}) {
      const size_t elems = size_t(n) * hidden;
      const double bytes = double(elems) * 14 + hidden * 2.0;  // x read and written, fp32 delta, bf16 out
      const int copies = int(std::clamp(2.0 * card.l2_bytes / bytes, 1.0, 64.0));
      float *x = nullptr, *delta = nullptr;
      bf16 *w = nullptr, *out = nullptr;
      CUDA_CHECK(cudaMalloc(&x, elems * 4 * copies));
      CUDA_CHECK(cudaMalloc(&delta, elems * 4 * copies));
      CUDA_CHECK(cudaMalloc(&out, elems * 2 * copies));
      CUDA_CHECK(cudaMalloc(&w, size_t(hidden) * 2));
      fill_normal_f32<<<card.sms * 8, 256, 0, stream>>>(x, elems * copies, 11, 1.0f);
      LAUNCH_CHECK();
      fill_normal_f32<<<card.sms * 8, 256, 0, stream>>>(delta, elems * copies, 12, 1.0f);
      LAUNCH_CHECK();
      fill(w, size_t(hidden), 13, stream, card.sms);
      auto params = [&](int i) {
        AddRmsNormParams p;
        const size_t c = size_t(i % copies) * elems;
        p.num_rows = n, p.hidden = hidden, p.x = x + c, p.ldx = hidden;
        p.maybe_delta = delta + c, p.ld_delta = hidden;
        p.w = reinterpret_cast<const flint::bf16_bits*>(w), p.out = reinterpret_cast<flint::bf16_bits*>(out) + c;
        p.ld_out = hidden, p.eps = 1e-6f;
        return p;
      };
      const auto us = timer.run(opt.warmup(), opt.reps(), [&](int i) {
        check_launch(flint::cuda::add_rmsnorm(params(i), stream, &why), why, "add_rmsnorm");
      });
      const unsigned long long nonfinite = device_count(
          [&](unsigned long long* c) { count_nonfinite<<<card.sms * 4, 256, 0, stream>>>(out, elems * copies, c); }, stream);
      Row r{"add_rmsnorm", std::to_string(n) + "x" + std::to_string(hidden), "", median(us), 0, 0, 0, nonfinite == 0};
      r.gbps = bytes / r.us / 1e3, r.pct_copy = 100 * r.gbps / copy.gbps();
      std::printf("%-12s %-18s %9.2f %8.0f %6.1f %s%s\n", r.op.c_str(), r.shape.c_str(), r.us, r.gbps, r.pct_copy,
                  r.ok ? "ok" : "FAIL", copies * bytes < 2.0 * card.l2_bytes ? "  (L2-resident)" : "");
      rows.push_back(r);
      CUDA_CHECK(cudaFree(x)); CUDA_CHECK(cudaFree(delta)); CUDA_CHECK(cudaFree(out)); CUDA_CHECK(cudaFree(w));
    }

  // ---- sample: each shape a block per row ("sample", the default) and split over several blocks ("sample.split",
  // FLINT_SAMPLE=split's slices of at least 2048 ids, where the batch splits), the same tokens checked.
  const char* mixes[] = {"greedy", "topk50+topp0.9", "topp0.95", "T=1", "greedy,no-lp"};
  std::printf("%-12s %-18s %-15s %9s %9s %7s %s\n", "op", "batch x vocab", "params", "us", "us/row", "blocks", "check");
  for (int vocab : {49152, 151936})
    for (int batch : {1, 32, 256})
      for (int mix = 0; mix < 5; ++mix) {
        float* logits = nullptr;
        SampleRow* d_rows = nullptr;
        int32_t* tokens = nullptr;
        float* logprobs = nullptr;
        void* workspace = nullptr;
        const size_t workspace_bytes = flint::cuda::sample_workspace_bytes(batch);
        CUDA_CHECK(cudaMalloc(&logits, size_t(batch) * vocab * 4));
        CUDA_CHECK(cudaMalloc(&d_rows, size_t(batch) * sizeof(SampleRow)));
        CUDA_CHECK(cudaMalloc(&tokens, size_t(batch) * 4));
        CUDA_CHECK(cudaMalloc(&logprobs, size_t(batch) * 4));
        CUDA_CHECK(cudaMalloc(&workspace, std::max<size_t>(workspace_bytes, 16)));
        fill_normal_f32<<<card.sms * 8, 256, 0, stream>>>(logits, size_t(batch) * vocab, 21 + vocab + batch, 3.0f);
        LAUNCH_CHECK();
        std::vector<SampleRow> host_rows(static_cast<size_t>(batch));
        for (int r = 0; r < batch; ++r) {
          SampleRow& s = host_rows[size_t(r)];
          s.seed = uint64_t(r) * 7919, s.step = 3;
          if (mix == 0 || mix == 4) s.temperature = 0.0f;
          if (mix == 1) s.temperature = 0.7f, s.top_k = 50, s.top_p = 0.9f;
          if (mix == 2) s.temperature = 0.8f, s.top_p = 0.95f;
        }
        CUDA_CHECK(cudaMemcpy(d_rows, host_rows.data(), host_rows.size() * sizeof(SampleRow), cudaMemcpyHostToDevice));
        SampleParams p;
        p.num_rows = batch, p.vocab = vocab, p.logits = logits, p.ld_logits = vocab, p.rows = d_rows;
        p.token_ids = tokens, p.maybe_logprobs = mix == 4 ? nullptr : logprobs;  // the engine asks for none
        p.maybe_workspace = workspace, p.workspace_bytes = workspace_bytes, p.maybe_host_rows = host_rows.data();
        std::vector<int32_t> block_tokens;
        for (int split : {0, 1}) {
          flint::cuda::set_sample_split_min_slice(split ? 2048 : 0);
          const int blocks = flint::cuda::sample_blocks_per_row(batch, vocab);
          if (split && blocks < 2) continue;  // this batch is not split: the row above is the same launch
          CUDA_CHECK(cudaMemsetAsync(tokens, 0xFF, size_t(batch) * 4, stream));
          const auto us = timer.run(opt.warmup(), opt.reps(), [&](int) {
            check_launch(flint::cuda::sample(p, stream, &why), why, "sample");
          });
          const unsigned long long bad = device_count(
              [&](unsigned long long* c) { count_bad_tokens<<<1, 256, 0, stream>>>(tokens, batch, vocab, c); }, stream);
          std::vector<int32_t> got(static_cast<size_t>(batch));
          CUDA_CHECK(cudaMemcpy(got.data(), tokens, got.size() * 4, cudaMemcpyDeviceToHost));
          if (!split) block_tokens = got;
          const bool same = !split || got == block_tokens;  // the split sampler's tokens are the block kernel's
          Row r{split ? "sample.split" : "sample", std::to_string(batch) + "x" + std::to_string(vocab), mixes[mix],
                median(us), 0, 0, 0, bad == 0 && same};
          r.us_per_row = r.us / batch, r.blocks = blocks;
          std::printf("%-12s %-18s %-15s %9.1f %9.2f %7d %s%s\n", r.op.c_str(), r.shape.c_str(), r.mix.c_str(), r.us,
                      r.us_per_row, blocks, r.ok ? "ok" : "FAIL", same ? "" : " (tokens differ from the block kernel's)");
          rows.push_back(r);
        }
        flint::cuda::set_sample_split_min_slice(0);
        CUDA_CHECK(cudaFree(logits)); CUDA_CHECK(cudaFree(d_rows)); CUDA_CHECK(cudaFree(tokens)); CUDA_CHECK(cudaFree(logprobs));
        CUDA_CHECK(cudaFree(workspace));
      }

  // ---- dequantize: random bytes with the scales made finite (fp16 0x2000 ≈ 0.0078) so outputs are finite.
  std::printf("%-12s %-18s %9s %8s %6s\n", "op", "type 4096x4096", "us", "GB/s", "%copy");
  for (DType t : {DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K}) {
    const int64_t n = 4096;
    const uint64_t row_bytes = *flint::dtype_bytes(t, n);
    std::vector<uint8_t> src(size_t(n) * row_bytes);
    std::mt19937 rng(5);
    for (auto& b : src) b = uint8_t(rng());
    const auto info = flint::dtype_info(t);
    for (size_t b = 0; b < src.size(); b += size_t(info.block_bytes)) {
      if (t == DType::F16) src[b + 1] &= 0x3B;  // exponent below 15: finite
      else if (t == DType::Q6_K) src[b + offsetof(flint::cpu::BlockQ6_K, d) + 1] = 0x20;
      else {
        src[b + 1] = 0x20;
        if (t == DType::Q4_1 || t == DType::Q4_K) src[b + 3] = 0x20;
      }
    }
    void* d_src = nullptr;
    bf16* d_dst = nullptr;
    CUDA_CHECK(cudaMalloc(&d_src, src.size()));
    CUDA_CHECK(cudaMalloc(&d_dst, size_t(n) * n * 2));
    CUDA_CHECK(cudaMemcpy(d_src, src.data(), src.size(), cudaMemcpyHostToDevice));
    DequantParams p;
    p.type = t, p.num_rows = n, p.row_elems = n, p.src = d_src, p.src_row_bytes = row_bytes;
    p.dst = reinterpret_cast<flint::bf16_bits*>(d_dst), p.ld_dst = n;
    const auto us = timer.run(opt.warmup(), opt.reps(), [&](int) {
      check_launch(flint::cuda::dequantize(p, stream, &why), why, "dequantize");
    });
    const unsigned long long nonfinite = device_count(
        [&](unsigned long long* c) { count_nonfinite<<<card.sms * 4, 256, 0, stream>>>(d_dst, size_t(n) * n, c); }, stream);
    Row r{"dequantize", std::string(info.name), "", median(us), 0, 0, 0, nonfinite == 0};
    r.gbps = (double(src.size()) + double(n) * n * 2) / r.us / 1e3, r.pct_copy = 100 * r.gbps / copy.gbps();
    std::printf("%-12s %-18s %9.1f %8.0f %6.1f %s\n", r.op.c_str(), r.shape.c_str(), r.us, r.gbps, r.pct_copy,
                r.ok ? "ok" : "FAIL");
    rows.push_back(r);
    CUDA_CHECK(cudaFree(d_src)); CUDA_CHECK(cudaFree(d_dst));
  }

  bool pass = copy.ok;
  for (const Row& r : rows) pass = pass && r.ok;
  std::printf("\n## summary ops_bench\n%s: copy ceiling %.0f GB/s%s\n", card.name.c_str(), copy.gbps(),
              timer.hold_timed_out ? "; WARNING: hold timed out" : "");
  for (const Row& r : rows) {
    const bool sample = r.op.rfind("sample", 0) == 0;
    if (sample && (r.shape.find("x151936") == std::string::npos)) continue;  // the big vocab only
    if (r.op == "add_rmsnorm" && r.shape.rfind("1x", 0) != 0 && r.shape.rfind("2048x", 0) != 0) continue;
    if (sample) {
      double speedup = 0;  // sample.split against the block kernel on the same shape and mix
      for (const Row& o : rows)
        if (r.op == "sample.split" && o.op == "sample" && o.shape == r.shape && o.mix == r.mix) speedup = o.us / r.us;
      std::printf("%-12s %-13s %-15s %8.1f us %8.2f us/row %3d blocks/row%s %s\n", r.op.c_str(), r.shape.c_str(),
                  r.mix.c_str(), r.us, r.us_per_row, r.blocks,
                  speedup > 0 ? (" " + std::to_string(speedup).substr(0, 5) + "x").c_str() : "", r.ok ? "ok" : "FAIL");
    }
    else
      std::printf("%-12s %-13s %8.2f us %6.0f GB/s %5.1f%% copy %s\n", r.op.c_str(), r.shape.c_str(), r.us, r.gbps,
                  r.pct_copy, r.ok ? "ok" : "FAIL");
  }
  std::printf("ops_bench: %s\n", pass ? "PASS" : "FAIL");
  if (!opt.json_path.empty()) {
    Json j;
    j.open(nullptr, '{').open("card", '{').text("name", card.name).num("sms", card.sms).close('}');
    j.boolean("quick", opt.quick).num("copy_gbps", copy.gbps()).open("results", '[');
    for (const Row& r : rows)
      j.open(nullptr, '{').text("op", r.op).text("shape", r.shape).text("params", r.mix).num("us", r.us)
          .num("us_per_row", r.us_per_row).num("blocks_per_row", r.blocks).num("gbps", r.gbps).num("pct_copy", r.pct_copy).boolean("ok", r.ok).close('}');
    j.close(']').boolean("pass", pass).close('}');
    FILE* f = std::fopen(opt.json_path.c_str(), "w");
    const bool written = f && std::fputs(j.str().c_str(), f) >= 0 && std::fputc('\n', f) != EOF;
    if (f) std::fclose(f);
    if (!written) {
      std::fprintf(stderr, "cannot write %s\n", opt.json_path.c_str());
      return 2;
    }
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
  return pass ? 0 : 1;
}
