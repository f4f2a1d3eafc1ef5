// matmul_bench: Flint's bf16 matmul (kernels/cuda/matmul.h, the production launcher) on every weight matrix of four
// models at M = 1 .. 2048, beside cuBLASLt on the same shape in the same run, as a share of the copy and matmul
// ceilings measured in this run. Prints a table, the issue's targets as PASS/MISS per shape, and JSON with --json.
//
// What is timed: `matmul(p, stream)` as the engine will call it, i.e. the dispatcher's pick (decode for M <= 64,
// prefill above) with the fusion a model uses: qkv with the Qkv epilogue (three outputs), gate_up with SiluMul
// (one output of N/2 columns), o, down and lm_head plain; bf16 out, no bias. The split-K reduction, when K is
// split, is part of the call. cuBLASLt runs the plain GEMM (bf16 out) on the same W and X: it does no epilogue,
// which favours it slightly on qkv and gate_up.
// Bytes counted: W + X read once, the outputs written once (the split-K partials are not counted: they are
// overhead). FLOPs: 2·M·N·K. %copy = GB/s / copy ceiling; %mm = TFLOP/s / cuBLASLt 8192³.
#include "bench/gpu_bench_common.cuh"
#include "kernels/cuda/matmul.h"

namespace {

using flint::MatmulEpilogue;
using flint::MatmulOut;
using flint::MatmulParams;
using flint::cuda::MatmulKernel;

struct Options {
  std::string json_path;
  bool quick = false;
  ProfileOptions profile;  // --only keys: model:matrix:M (else every model, matrix and kBatchSizes)
  int warmup() const { return profile.warmup_n >= 0 ? profile.warmup_n : quick ? 2 : 5; }
  int reps() const { return profile.reps_n >= 1 ? profile.reps_n : quick ? 10 : 40; }
};

struct Pick {
  const ModelShape* model;
  MatrixShape mat;
  int M;
};

// The shapes to run: --only's, in its order, or all of them. False (with why) on a key naming no shape.
bool pick_shapes(const std::string& only, std::vector<Pick>& picks, std::string& why) {
  if (only.empty()) {
    for (const auto& m : kModels)
      for (const auto& mat : matrices_of(m))
        for (int M : kBatchSizes) picks.push_back({&m, mat, M});
    return true;
  }
  for (const std::string& key : split_on(only, ',')) {
    const std::vector<std::string> f = split_on(key, ':');
    const ModelShape* m = f.size() == 3 ? model_named(f[0]) : nullptr;
    const int M = f.size() == 3 ? positive_field(f[2]) : -1;
    const MatrixShape* mat = nullptr;
    std::vector<MatrixShape> mats;
    if (m) mats = matrices_of(*m);
    for (const auto& x : mats)
      if (f.size() == 3 && f[1] == x.name) mat = &x;
    if (!m || !mat || M < 1 || M > 65536) {
      why = "--only: \"" + key + "\" is not model:matrix:M (a model of kModels, matrix qkv|o|gate_up|down|lm_head, "
            "1 <= M <= 65536)";
      return false;
    }
    picks.push_back({m, *mat, M});
  }
  return true;
}

// Flint against cuBLASLt on every output: both bf16 from the same fp32-accumulated products, so they differ by
// rounding only. Pass: no NaN/Inf in either, and max |flint - cublas| <= 2^-6 · RMS(cublas) + 2^-7 · |cublas|.
__global__ void compare_outputs(const bf16* __restrict__ a, const bf16* __restrict__ b, size_t n,
                                unsigned long long* bad, unsigned long long* nonfinite, float rms) {
  unsigned long long local_bad = 0, local_nf = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float x = __bfloat162float(a[i]), y = __bfloat162float(b[i]);
    if (!isfinite(x) || !isfinite(y)) {
      ++local_nf;
      continue;
    }
    local_bad += fabsf(x - y) > 0.015625f * rms + 0.0078125f * fabsf(y);
  }
  if (local_bad) atomicAdd(bad, local_bad);
  if (local_nf) atomicAdd(nonfinite, local_nf);
}

__global__ void sum_squares(const bf16* __restrict__ p, size_t n, double* out) {
  double local = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double v = __bfloat162float(p[i]);
    if (isfinite(v)) local += v * v;
  }
  atomicAdd(out, local);
}

struct Result {
  std::string model, matrix, fusion;
  int M = 0, N = 0, K = 0, copies = 0, splits = 1;
  std::string kernel;
  double bytes = 0, flops = 0, w_bytes = 0;
  double flint_us = 0, flint_min_us = 0, cublas_us = 0;
  bool cublas_ran = false, check_pass = false;
  unsigned long long check_bad = 0, check_nonfinite = 0;
};

class MatmulBench {
 public:
  MatmulBench(const Options& opt, const Card& card) : opt_(opt), card_(card), stream_(make_stream()), timer_(stream_) {}
  ~MatmulBench() {
    cudaFree(pool_);
    cudaFree(workspace_);
    cudaStreamDestroy(stream_);
  }
  MatmulBench(const MatmulBench&) = delete;
  MatmulBench& operator=(const MatmulBench&) = delete;

  CopyCeiling copy;
  double mm_ceiling_tflops = 0;
  bool hold_timed_out() const { return timer_.hold_timed_out; }

  void measure_ceilings() {
    copy = measure_copy_ceiling(timer_, stream_, card_, opt_.quick ? 5 : 20);
    const int n = 8192;
    bf16 *A = nullptr, *B = nullptr, *C = nullptr;
    CUDA_CHECK(cudaMalloc(&A, size_t(n) * n * 2));
    CUDA_CHECK(cudaMalloc(&B, size_t(n) * n * 2));
    CUDA_CHECK(cudaMalloc(&C, size_t(n) * n * 2));
    fill(A, size_t(n) * n, 5, stream_, card_.sms);
    fill(B, size_t(n) * n, 6, stream_, card_.sms);
    if (gemm_.plan(n, n, n)) {
      const auto us = timer_.run(3, opt_.quick ? 5 : 20, [&](int) { gemm_.run(A, B, C, stream_); });
      mm_ceiling_tflops = 2.0 * n * double(n) * n / median(us) / 1e6;
    }
    CUDA_CHECK(cudaFree(A));
    CUDA_CHECK(cudaFree(B));
    CUDA_CHECK(cudaFree(C));
  }

  void reserve(const std::vector<std::pair<int, MatrixShape>>& shapes) {
    size_t need = 0, ws = 0;
    for (const auto& [M, mat] : shapes) {
      need = std::max(need, copies_for(M, mat.N, mat.K) * copy_bytes(M, mat.N, mat.K));
      ws = std::max(ws, flint::cuda::matmul_workspace_bytes(M, mat.N, mat.K, MatmulKernel::Auto));
    }
    CUDA_CHECK(cudaMalloc(&pool_, need));
    CUDA_CHECK(cudaMalloc(&workspace_, std::max<size_t>(ws, 256)));
    workspace_bytes_ = std::max<size_t>(ws, 256);
    CUDA_CHECK(cudaMalloc(&counters_, 2 * sizeof(unsigned long long) + sizeof(double)));
  }

  Result measure(const ModelShape& model, const MatrixShape& mat, int M, uint64_t seed) {
    Result r;
    r.model = model.name, r.matrix = mat.name, r.M = M, r.N = mat.N, r.K = mat.K;
    r.splits = flint::matmul_num_splits(mat.N, mat.K);
    const MatmulKernel kernel = flint::cuda::matmul_pick(M);
    r.kernel = flint::cuda::matmul_kernel_name(kernel);
    const bool qkv = std::strcmp(mat.name, "qkv") == 0, gate_up = std::strcmp(mat.name, "gate_up") == 0;
    r.fusion = qkv ? "qkv" : gate_up ? "silu_mul" : "none";
    const size_t w_bytes = size_t(mat.N) * mat.K * 2, x_bytes = size_t(M) * mat.K * 2;
    const size_t out_cols = gate_up ? mat.N / 2 : mat.N, y_bytes = size_t(M) * mat.N * 2;
    r.w_bytes = double(w_bytes);
    r.bytes = double(w_bytes + x_bytes + size_t(M) * out_cols * 2);
    r.flops = 2.0 * M * double(mat.N) * mat.K;
    const size_t copies = copies_for(M, mat.N, mat.K);
    r.copies = int(copies);
    // Pool: W copies, X copies, then per copy our Y and cuBLAS's Y (each as big as the plain output).
    char* base = static_cast<char*>(pool_);
    const size_t w_step = align_up(w_bytes), x_step = align_up(x_bytes), y_step = align_up(y_bytes);
    auto W = [&](size_t i) { return reinterpret_cast<bf16*>(base + i * w_step); };
    auto X = [&](size_t i) { return reinterpret_cast<bf16*>(base + copies * w_step + i * x_step); };
    auto Y = [&](size_t i) { return reinterpret_cast<bf16*>(base + copies * (w_step + x_step) + i * y_step); };
    auto Yc = [&](size_t i) { return reinterpret_cast<bf16*>(base + copies * (w_step + x_step + y_step) + i * y_step); };
    fill(W(0), copies * w_step / 2, seed, stream_, card_.sms);
    fill(X(0), copies * x_step / 2, seed + 1, stream_, card_.sms);
    CUDA_CHECK(cudaMemsetAsync(Y(0), 0xFF, 2 * copies * y_step, stream_));  // poison ours and cuBLAS's: bf16 NaN

    auto params = [&](size_t c, bool fused) {
      MatmulParams p;
      p.M = M, p.N = mat.N, p.K = mat.K;
      p.x = reinterpret_cast<const flint::bf16_bits*>(X(c)), p.ldx = mat.K;
      p.w = reinterpret_cast<const flint::bf16_bits*>(W(c)), p.ldw = mat.K;
      p.out_type = MatmulOut::BF16, p.y = Y(c), p.ldy = mat.N;
      p.workspace = workspace_, p.workspace_bytes = workspace_bytes_;
      if (fused && qkv) {  // q, k, v side by side in Y's rows: the same bytes as the plain output
        const int num_q = model.num_heads * model.head_dim, num_kv = model.num_kv_heads * model.head_dim;
        p.epilogue = MatmulEpilogue::Qkv, p.num_q = num_q, p.num_kv = num_kv, p.ldy = num_q;
        p.k_out = Y(c) + size_t(M) * num_q, p.ld_k = num_kv;
        p.v_out = Y(c) + size_t(M) * (num_q + num_kv), p.ld_v = num_kv;
      } else if (fused && gate_up) {
        p.epilogue = MatmulEpilogue::SiluMul, p.ldy = mat.N / 2;
      }
      return p;
    };
    auto run = [&](const MatmulParams& p) {
      std::string why;
      const cudaError_t e = flint::cuda::matmul(p, stream_, MatmulKernel::Auto, &why);
      if (e != cudaSuccess) {
        std::fprintf(stderr, "matmul %s %s M=%d failed: %s %s\n", model.name, mat.name, M, cudaGetErrorName(e), why.c_str());
        std::exit(2);
      }
    };

    // Check first: the plain product on copy 0 against cuBLASLt's, every output.
    run(params(0, false));
    if (gemm_.plan(M, mat.N, mat.K)) {
      r.cublas_ran = true;
      gemm_.run(W(0), X(0), Yc(0), stream_);
      check(Y(0), Yc(0), size_t(M) * mat.N, r);
      const auto us = timer_.run(opt_.warmup(), opt_.reps(), [&](int i) {
        const size_t c = size_t(i) % copies;
        gemm_.run(W(c), X(c), Yc(c), stream_);
      });
      r.cublas_us = median(us);
    }
    const auto us = timer_.run(opt_.warmup(), opt_.reps(), [&](int i) { run(params(size_t(i) % copies, true)); });
    r.flint_us = median(us);
    r.flint_min_us = us.front();
    return r;
  }

 private:
  static cudaStream_t make_stream() {
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }
  static size_t copy_bytes(int M, int N, int K) {
    return align_up(size_t(N) * K * 2) + align_up(size_t(M) * K * 2) + 2 * align_up(size_t(M) * N * 2);
  }
  size_t copies_for(int M, int N, int K) const {  // W and X copies that together span >= 3 x L2
    const size_t inputs = align_up(size_t(N) * K * 2) + align_up(size_t(M) * K * 2);
    return std::max<size_t>(2, (3 * card_.l2_bytes + inputs - 1) / inputs);
  }
  void check(const bf16* ours, const bf16* theirs, size_t n, Result& r) {
    auto* bad = reinterpret_cast<unsigned long long*>(counters_);
    auto* sumsq = reinterpret_cast<double*>(bad + 2);
    CUDA_CHECK(cudaMemsetAsync(counters_, 0, 2 * sizeof(unsigned long long) + sizeof(double), stream_));
    sum_squares<<<card_.sms * 4, 256, 0, stream_>>>(theirs, n, sumsq);
    LAUNCH_CHECK();
    double ss = 0;
    CUDA_CHECK(cudaMemcpyAsync(&ss, sumsq, sizeof ss, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    compare_outputs<<<card_.sms * 4, 256, 0, stream_>>>(ours, theirs, n, bad, bad + 1, float(std::sqrt(ss / n)));
    LAUNCH_CHECK();
    unsigned long long h[2] = {0, 0};
    CUDA_CHECK(cudaMemcpyAsync(h, bad, sizeof h, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    r.check_bad = h[0], r.check_nonfinite = h[1];
    r.check_pass = h[0] == 0 && h[1] == 0;
  }

  const Options& opt_;
  const Card& card_;
  cudaStream_t stream_ = nullptr;
  Timer timer_;
  LtGemm gemm_;
  void* pool_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  void* counters_ = nullptr;
};

// The issue's targets. Decode: M <= 16 on weights of 16 MB or more, >= 85% of the copy ceiling and no slower than
// cuBLASLt. Prefill: M >= 512, >= 90% of cuBLASLt's throughput. Other shapes have no target ("-").
const char* target_of(const Result& r) {
  if (r.M <= 16 && r.w_bytes >= 16e6) return "decode";
  if (r.M >= 512) return "prefill";
  return "-";
}
bool meets(const Result& r, double copy_gbps) {
  const double gbps = r.bytes / r.flint_us / 1e3;
  if (std::strcmp(target_of(r), "decode") == 0) return gbps >= 0.85 * copy_gbps && r.flint_us <= r.cublas_us;
  if (std::strcmp(target_of(r), "prefill") == 0) return r.flint_us <= r.cublas_us / 0.9;
  return true;
}

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
      std::fprintf(stderr, "usage: %s [--quick] [--json PATH] [--only MODEL:MATRIX:M,...] [--reps W,R] [--no-ceilings]\n%s",
                   argv[0], ProfileOptions::kUsage);
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  std::vector<Pick> shapes;
  if (std::string why; !pick_shapes(opt.profile.only, shapes, why)) {
    std::fprintf(stderr, "%s\n", why.c_str());
    return 2;
  }
  const Card card = read_card();
  std::printf("== card: %s  cc %d.%d  %d SMs  L2 %.1f MiB  driver %d  runtime %d  cuBLASLt %zu%s\n", card.name.c_str(),
              card.cc_major, card.cc_minor, card.sms, card.l2_bytes / 1048576.0, card.driver, card.runtime,
              card.cublaslt_version, opt.quick ? "  (quick)" : "");
  std::printf("FLINT_MATMUL=%s: the dispatcher runs %s\n", std::getenv("FLINT_MATMUL") ? std::getenv("FLINT_MATMUL") : "",
              flint::cuda::matmul_kernel_name(flint::cuda::matmul_pick(1)));
  std::fflush(stdout);

  MatmulBench bench(opt, card);
  if (!opt.profile.no_ceilings) bench.measure_ceilings();
  const double copy_gbps = bench.copy.gbps(), mm_tflops = bench.mm_ceiling_tflops;
  if (opt.profile.no_ceilings)
    std::printf("== ceilings not measured (--no-ceilings): %%copy and %%mm read 0\n");
  else
    std::printf("== ceilings: copy %.0f GB/s (memcpy %.0f, copy16 %.0f)%s; cuBLASLt bf16 8192^3 %.0f TFLOP/s\n",
                copy_gbps, bench.copy.memcpy_gbps, bench.copy.kernel_gbps, bench.copy.ok ? "" : " FAIL: copy wrong",
                mm_tflops);
  auto pct = [](double v, double ceiling) { return ceiling > 0 ? 100 * v / ceiling : 0.0; };

  std::vector<std::pair<int, MatrixShape>> sizes;
  for (const Pick& s : shapes) sizes.push_back({s.M, s.mat});
  bench.reserve(sizes);

  std::printf("== flint matmul vs cuBLASLt, same shapes, same run (bytes = W + X + outputs; FLOPs = 2MNK)\n"
              "%-13s %-8s %5s %6s %6s %-8s %2s %9s %9s %7s %7s %5s %5s %7s %s\n",
              "model", "matrix", "M", "N", "K", "kernel", "S", "flint_us", "cublas_us", "GB/s", "TFLOP/s", "%copy",
              "%mm", "vs_cub", "check");
  std::vector<Result> results;
  uint64_t seed = 5000;
  for (const Pick& s : shapes) {
    const Result r = bench.measure(*s.model, s.mat, s.M, seed += 10);
    results.push_back(r);
    const double gbps = r.bytes / r.flint_us / 1e3, tflops = r.flops / r.flint_us / 1e6;
    std::printf("%-13s %-8s %5d %6d %6d %-8s %2d %9.1f %9.1f %7.0f %7.1f %5.0f %5.1f %6.2fx %s\n", s.model->name,
                s.mat.name, s.M, s.mat.N, s.mat.K, r.kernel.c_str(), r.splits, r.flint_us, r.cublas_us, gbps, tflops,
                pct(gbps, copy_gbps), pct(tflops, mm_tflops), r.cublas_us / r.flint_us, r.check_pass ? "ok" : "FAIL");
    std::fflush(stdout);
  }

  int checked_ok = 0, targets = 0, met = 0;
  for (const auto& r : results) {
    checked_ok += r.check_pass;
    if (std::strcmp(target_of(r), "-") != 0) ++targets, met += meets(r, copy_gbps);
  }
  const bool pass = (opt.profile.no_ceilings || (bench.copy.ok && mm_tflops > 0)) && checked_ok == int(results.size());
  std::printf("\n## summary matmul_bench\n%s: copy ceiling %.0f GB/s, matmul ceiling %.0f TFLOP/s; %d/%zu shapes "
              "match cuBLASLt%s\nissue 4 targets: decode = M<=16 on W>=16MB: >=85%% of copy and <= cuBLAS time; "
              "prefill = M>=512: >=90%% of cuBLAS throughput\n%-13s %-8s %5s %-7s %6s %7s %s\n",
              card.name.c_str(), copy_gbps, mm_tflops, checked_ok, results.size(),
              bench.hold_timed_out() ? "; WARNING: hold timed out" : "", "model", "matrix", "M", "target", "%copy",
              "vs_cub", "result");
  for (const auto& r : results) {
    if (std::strcmp(target_of(r), "-") == 0) continue;
    const double gbps = r.bytes / r.flint_us / 1e3;
    std::printf("%-13s %-8s %5d %-7s %6.0f %6.2fx %s\n", r.model.c_str(), r.matrix.c_str(), r.M, target_of(r),
                pct(gbps, copy_gbps), r.cublas_us / r.flint_us, meets(r, copy_gbps) ? "PASS" : "MISS");
  }
  std::printf("targets met: %d/%d; matmul_bench: %s\n", met, targets, pass ? "PASS" : "FAIL");

  if (!opt.json_path.empty()) {
    Json j;
    j.open(nullptr, '{').open("card", '{').text("name", card.name).num("cc", card.cc_major * 10 + card.cc_minor);
    j.num("sms", card.sms).num("l2_bytes", double(card.l2_bytes)).num("driver", card.driver).num("runtime", card.runtime);
    j.num("cublaslt", double(card.cublaslt_version)).close('}');
    j.open("options", '{').boolean("quick", opt.quick).num("warmup", opt.warmup()).num("reps", opt.reps()).close('}');
    j.num("copy_gbps", copy_gbps).num("matmul_ceiling_tflops", mm_tflops).boolean("copy_ok", bench.copy.ok);
    j.open("shapes", '[');
    for (const auto& r : results) {
      const double gbps = r.bytes / r.flint_us / 1e3, tflops = r.flops / r.flint_us / 1e6;
      j.open(nullptr, '{').text("model", r.model).text("matrix", r.matrix).text("fusion", r.fusion).num("M", r.M);
      j.num("N", r.N).num("K", r.K).text("kernel", r.kernel).num("splits", r.splits).num("copies", r.copies);
      j.num("bytes", r.bytes).num("flops", r.flops).num("flint_us", r.flint_us).num("flint_min_us", r.flint_min_us);
      j.num("cublas_us", r.cublas_us).num("gbps", gbps).num("tflops", tflops).num("pct_copy", pct(gbps, copy_gbps));
      j.num("pct_matmul", pct(tflops, mm_tflops)).num("cublas_over_flint", r.cublas_us / r.flint_us);
      j.boolean("check_pass", r.check_pass).num("check_bad", double(r.check_bad));
      j.num("check_nonfinite", double(r.check_nonfinite)).text("target", target_of(r));
      j.boolean("target_met", meets(r, copy_gbps)).close('}');
    }
    j.close(']').num("targets", targets).num("targets_met", met).boolean("hold_timed_out", bench.hold_timed_out());
    j.boolean("pass", pass).close('}');
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
