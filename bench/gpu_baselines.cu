// gpu_baselines: the ceilings every Flint GPU benchmark is compared with, measured on this card in this run:
// device-to-device copy bandwidth, cuBLASLt bf16 matmul rate, and cuBLASLt on every weight matrix of four models.
#include "bench/gpu_bench_common.cuh"

// One warp per checked output: ref = Σ_k X[m,k]·W[n,k] in fp64, beside cuBLAS's Y[m,n].
// enumerate: check every output (s -> m = s / N, n = s % N); else sample (0,0), (M-1,N-1) and hashed positions.
__global__ void reference_outputs(const bf16* __restrict__ W, const bf16* __restrict__ X, const bf16* __restrict__ Y,
                                  int M, int N, int K, int num_checks, bool enumerate, uint64_t seed,
                                  double* __restrict__ ref, float* __restrict__ got) {
  const int s = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (s >= num_checks) return;
  int m, n;
  if (enumerate) {
    m = s / N;
    n = s % N;
  } else if (s < 2) {
    m = s == 0 ? 0 : M - 1;
    n = s == 0 ? 0 : N - 1;
  } else {
    m = int(hash32(seed * 0x9E3779B97F4A7C15ull + 2 * uint64_t(s)) % uint32_t(M));
    n = int(hash32(seed * 0x9E3779B97F4A7C15ull + 2 * uint64_t(s) + 1) % uint32_t(N));
  }
  double acc = 0.0;
  for (int k = lane; k < K; k += 32)
    acc += double(__bfloat162float(X[size_t(m) * K + k])) * double(__bfloat162float(W[size_t(n) * K + k]));
  for (int off = 16; off > 0; off /= 2) acc += __shfl_down_sync(0xffffffffu, acc, off);
  if (lane == 0) {
    ref[s] = acc;
    got[s] = __bfloat162float(Y[size_t(m) * N + n]);
  }
}

// ---- The run: options, results, and the three measurements.
struct Options {
  std::string json_path;
  bool quick = false;
  int warmup() const { return quick ? 2 : 5; }
  int reps() const { return quick ? 10 : 40; }
};

struct Check {  // cuBLAS output against the fp64 reference
  int checked = 0, nonfinite = 0;
  double rel_l2 = 0, max_err_over_rms = 0;
  bool pass = false;
};

struct GemmResult {
  std::string model, matrix;
  int M = 0, N = 0, K = 0, copies = 0;
  bool ran = false;
  double us_median = 0, us_min = 0, us_max = 0, bytes = 0, flops = 0;
  size_t algo_workspace = 0;
  unsigned long long y_nonfinite = 0;
  Check check;
};


class Bench {
 public:
  Bench(const Options& opt, const Card& card) : opt_(opt), card_(card), stream_(make_stream()), timer_(stream_) {
    CUDA_CHECK(cudaMalloc(&counter_, sizeof(unsigned long long)));
  }
  ~Bench() {
    cudaFree(counter_);
    cudaStreamDestroy(stream_);
  }
  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;

  double copy_memcpy_gbps = 0, copy_kernel_gbps = 0, copy_bytes_per_buffer = 0;
  bool copy_ok = true;
  GemmResult ceiling;
  std::vector<GemmResult> gemms;
  Check sanity;
  bool hold_timed_out() const { return timer_.hold_timed_out; }
  double copy_ceiling_gbps() const { return std::max(copy_memcpy_gbps, copy_kernel_gbps); }
  double matmul_ceiling_tflops() const { return ceiling.ran ? ceiling.flops / ceiling.us_median / 1e6 : 0; }

  // (a) Copy ceiling (gpu_bench_common.cuh).
  void measure_copy() {
    const CopyCeiling c = measure_copy_ceiling(timer_, stream_, card_, opt_.quick ? 5 : 20);
    copy_memcpy_gbps = c.memcpy_gbps;
    copy_kernel_gbps = c.kernel_gbps;
    copy_bytes_per_buffer = c.bytes_per_buffer;
    copy_ok = c.ok;
  }

  // Sizes the pool once for the largest rotation any shape needs.
  void reserve_pool(const std::vector<std::pair<int, MatrixShape>>& shapes) {
    size_t need = 0;
    for (const auto& [M, mat] : shapes) need = std::max(need, copies_for(M, mat.N, mat.K) * copy_bytes(M, mat.N, mat.K));
    CUDA_CHECK(cudaMalloc(&pool_, need));
    pool_bytes_ = need;
  }
  void release_pool() {
    CUDA_CHECK(cudaFree(pool_));
    pool_ = nullptr;
  }

  // (b), (c) One shape: W, X rotated across enough copies that they span ≥ 3 × L2 (so L2 never serves them).
  // Bytes counted: W + X read once, Y written once. FLOPs: 2·M·N·K.
  GemmResult measure_gemm(const std::string& model, const MatrixShape& mat, int M, uint64_t seed) {
    GemmResult r;
    r.model = model;
    r.matrix = mat.name;
    r.M = M;
    r.N = mat.N;
    r.K = mat.K;
    const size_t w_bytes = size_t(mat.N) * mat.K * 2, x_bytes = size_t(M) * mat.K * 2, y_bytes = size_t(M) * mat.N * 2;
    r.bytes = double(w_bytes + x_bytes + y_bytes);
    r.flops = 2.0 * M * double(mat.N) * mat.K;
    const size_t copies = copies_for(M, mat.N, mat.K);
    r.copies = int(copies);
    if (!gemm_.plan(M, mat.N, mat.K)) {
      std::printf("FAIL %s %s M=%d: cuBLASLt offers no algorithm\n", model.c_str(), mat.name, M);
      return r;
    }
    r.algo_workspace = gemm_.algo_workspace();
    // Layout in the pool: all W copies, all X copies, all Y copies, each 256-byte aligned.
    char* base = static_cast<char*>(pool_);
    const size_t w_step = align_up(w_bytes), x_step = align_up(x_bytes), y_step = align_up(y_bytes);
    auto W = [&](size_t i) { return reinterpret_cast<bf16*>(base + i * w_step); };
    auto X = [&](size_t i) { return reinterpret_cast<bf16*>(base + copies * w_step + i * x_step); };
    auto Y = [&](size_t i) { return reinterpret_cast<bf16*>(base + copies * (w_step + x_step) + i * y_step); };
    fill(W(0), copies * w_step / 2, seed, stream_, card_.sms);
    fill(X(0), copies * x_step / 2, seed + 1, stream_, card_.sms);
    CUDA_CHECK(cudaMemsetAsync(Y(0), 0xFF, copies * y_step, stream_));  // poison: 0xFFFF is a bf16 NaN
    const auto us = timer_.run(opt_.warmup(), opt_.reps(), [&](int i) {
      const size_t c = size_t(i) % copies;
      gemm_.run(W(c), X(c), Y(c), stream_);
    });
    r.ran = true;
    r.us_median = median(us);
    r.us_min = us.front();
    r.us_max = us.back();
    // Copy 0 was written by the first warm-up call: every output finite, sampled outputs match fp64.
    r.y_nonfinite = nonfinite(Y(0), size_t(M) * mat.N);
    r.check = compare(W(0), X(0), Y(0), M, mat.N, mat.K, false, seed);
    if (r.y_nonfinite || !r.check.pass)
      std::printf("FAIL %s %s M=%d: %llu non-finite outputs, rel_l2 %.2e, max_err/rms %.2e\n", model.c_str(), mat.name,
                  M, r.y_nonfinite, r.check.rel_l2, r.check.max_err_over_rms);
    return r;
  }

  // Every output of one small, odd shape against the fp64 reference.
  void sanity_check() {
    const int M = 19, N = 960, K = 576;
    bf16 *W = nullptr, *X = nullptr, *Y = nullptr;
    CUDA_CHECK(cudaMalloc(&W, size_t(N) * K * 2));
    CUDA_CHECK(cudaMalloc(&X, size_t(M) * K * 2));
    CUDA_CHECK(cudaMalloc(&Y, size_t(M) * N * 2));
    fill(W, size_t(N) * K, 7, stream_, card_.sms);
    fill(X, size_t(M) * K, 8, stream_, card_.sms);
    CUDA_CHECK(cudaMemsetAsync(Y, 0xFF, size_t(M) * N * 2, stream_));
    if (!gemm_.plan(M, N, K)) {
      std::printf("FAIL sanity: cuBLASLt offers no algorithm for %dx%dx%d\n", M, N, K);
    } else {
      gemm_.run(W, X, Y, stream_);
      sanity = compare(W, X, Y, M, N, K, true, 9);
    }
    CUDA_CHECK(cudaFree(W));
    CUDA_CHECK(cudaFree(X));
    CUDA_CHECK(cudaFree(Y));
  }

 private:
  static cudaStream_t make_stream() {
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }
  size_t copy_bytes(int M, int N, int K) const {
    return align_up(size_t(N) * K * 2) + align_up(size_t(M) * K * 2) + align_up(size_t(M) * N * 2);
  }
  size_t copies_for(int M, int N, int K) const {
    const size_t inputs = align_up(size_t(N) * K * 2) + align_up(size_t(M) * K * 2);
    return std::max<size_t>(2, (3 * card_.l2_bytes + inputs - 1) / inputs);
  }
  unsigned long long nonfinite(const bf16* p, size_t n) {
    CUDA_CHECK(cudaMemsetAsync(counter_, 0, sizeof(unsigned long long), stream_));
    count_nonfinite<<<card_.sms * 8, 256, 0, stream_>>>(p, n, counter_);
    LAUNCH_CHECK();
    return read_counter();
  }
  unsigned long long read_counter() {
    unsigned long long v = 0;
    CUDA_CHECK(cudaMemcpyAsync(&v, counter_, sizeof(v), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return v;
  }
  // Pass: no NaN/Inf, ‖Y − ref‖/‖ref‖ < 1e-2 (bf16 output rounding alone gives ~2e-3), and no single error above
  // 5% of the reference's RMS (bf16 rounding of a value is at most 2^-8 of it).
  Check compare(const bf16* W, const bf16* X, const bf16* Y, int M, int N, int K, bool enumerate, uint64_t seed) {
    Check c;
    c.checked = enumerate ? M * N : 4096;
    double* ref_d = nullptr;
    float* got_d = nullptr;
    CUDA_CHECK(cudaMalloc(&ref_d, c.checked * sizeof(double)));
    CUDA_CHECK(cudaMalloc(&got_d, c.checked * sizeof(float)));
    reference_outputs<<<(c.checked + 7) / 8, 256, 0, stream_>>>(W, X, Y, M, N, K, c.checked, enumerate, seed, ref_d,
                                                                got_d);
    LAUNCH_CHECK();
    std::vector<double> ref(c.checked);
    std::vector<float> got(c.checked);
    CUDA_CHECK(cudaMemcpyAsync(ref.data(), ref_d, ref.size() * sizeof(double), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaMemcpyAsync(got.data(), got_d, got.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    CUDA_CHECK(cudaFree(ref_d));
    CUDA_CHECK(cudaFree(got_d));
    double err2 = 0, ref2 = 0, max_err = 0;
    for (int i = 0; i < c.checked; ++i) {
      if (!std::isfinite(got[i])) {
        ++c.nonfinite;
        continue;
      }
      const double e = std::fabs(double(got[i]) - ref[i]);
      err2 += e * e;
      ref2 += ref[i] * ref[i];
      max_err = std::max(max_err, e);
    }
    const double rms = std::sqrt(ref2 / c.checked);
    c.rel_l2 = ref2 > 0 ? std::sqrt(err2 / ref2) : INFINITY;
    c.max_err_over_rms = rms > 0 ? max_err / rms : INFINITY;
    c.pass = c.nonfinite == 0 && c.rel_l2 < 1e-2 && c.max_err_over_rms < 5e-2;
    return c;
  }

  const Options& opt_;
  const Card& card_;
  cudaStream_t stream_ = nullptr;
  Timer timer_;
  LtGemm gemm_;
  unsigned long long* counter_ = nullptr;
  void* pool_ = nullptr;
  size_t pool_bytes_ = 0;
};

// ---- Reporting: a table per measurement, a short summary last, everything in JSON with --json.
struct StepTotals {  // one decode/prefill step's GEMMs at batch M: num_layers × (qkv + o + gate_up + down) + lm_head
  std::string model;
  int M = 0;
  double layer_us = 0, layer_bytes = 0, layer_floor_us = 0, head_us = 0, head_bytes = 0, step_us = 0, step_floor_us = 0;
};

static void json_check(Json& j, const char* key, const Check& c) {
  j.open(key, '{').num("checked", c.checked).num("nonfinite", c.nonfinite).num("rel_l2", c.rel_l2);
  j.num("max_err_over_rms", c.max_err_over_rms).boolean("pass", c.pass).close('}');
}

static void json_gemm(Json& j, const GemmResult& r, double copy_gbps, double mm_tflops) {
  j.open(nullptr, '{').text("model", r.model).text("matrix", r.matrix).num("M", r.M).num("N", r.N).num("K", r.K);
  j.num("copies", r.copies).boolean("ran", r.ran).num("us_median", r.us_median).num("us_min", r.us_min);
  j.num("us_max", r.us_max).num("bytes", r.bytes).num("flops", r.flops);
  const double gbps = r.bytes / r.us_median / 1e3, tflops = r.flops / r.us_median / 1e6;
  j.num("gbps", gbps).num("tflops", tflops).num("pct_copy", 100 * gbps / copy_gbps).num("pct_matmul", 100 * tflops / mm_tflops);
  j.num("algo_workspace", double(r.algo_workspace)).num("y_nonfinite", double(r.y_nonfinite));
  json_check(j, "check", r.check);
  j.close('}');
}

static bool gemm_ok(const GemmResult& r) { return r.ran && r.y_nonfinite == 0 && r.check.pass; }

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
  std::printf("== card\n%s  cc %d.%d  %d SMs  %.1f GiB  L2 %.1f MiB  SM %d MHz  mem %d MHz x %d bit = %.0f GB/s spec"
              "  ECC %s\ndriver %d  runtime %d  cuBLASLt %zu  %s\n",
              card.name.c_str(), card.cc_major, card.cc_minor, card.sms, card.mem_bytes / 1073741824.0,
              card.l2_bytes / 1048576.0, card.sm_clock_khz / 1000, card.mem_clock_khz / 1000, card.bus_bits,
              card.spec_gbps(), card.ecc ? "on" : "off", card.driver, card.runtime, card.cublaslt_version,
              opt.quick ? "(quick)" : "");
  std::fflush(stdout);

  Bench bench(opt, card);
  bench.measure_copy();
  const double copy_gbps = bench.copy_ceiling_gbps();
  std::printf("== copy ceiling: 2 x %.2f GiB buffers, GB/s = (bytes read + bytes written) / median time\n"
              "cudaMemcpyAsync D2D %6.0f GB/s\ncopy16 kernel       %6.0f GB/s\nceiling             %6.0f GB/s "
              "(%.0f%% of spec)%s\n",
              bench.copy_bytes_per_buffer / 1073741824.0, bench.copy_memcpy_gbps, bench.copy_kernel_gbps, copy_gbps,
              100 * copy_gbps / card.spec_gbps(), bench.copy_ok ? "" : "  FAIL: copy wrong");
  std::fflush(stdout);

  bench.sanity_check();
  std::printf("== sanity: cuBLASLt 19x960x576 against an fp64 GPU kernel, every output: rel_l2 %.2e  max_err/rms "
              "%.2e  %s\n",
              bench.sanity.rel_l2, bench.sanity.max_err_over_rms, bench.sanity.pass ? "PASS" : "FAIL");

  // Every shape, in the order measured: the 8192³ ceiling first, then model × matrix × M.
  const MatrixShape big{"8192^3", 8192, 8192};
  std::vector<std::pair<int, MatrixShape>> shapes{{8192, big}};
  for (const auto& m : kModels)
    for (const auto& mat : matrices_of(m))
      for (int M : kBatchSizes) shapes.push_back({M, mat});
  bench.reserve_pool(shapes);

  bench.ceiling = bench.measure_gemm("ceiling", big, 8192, 100);
  const double mm_tflops = bench.matmul_ceiling_tflops();
  std::printf("== matmul ceiling: cuBLASLt bf16 8192^3 (TN, fp32 accumulate): %.0f us  %.0f TFLOP/s  check %s\n",
              bench.ceiling.us_median, mm_tflops, gemm_ok(bench.ceiling) ? "PASS" : "FAIL");
  std::printf("== cuBLASLt per weight matrix: Y(MxN) = X(MxK) W^T, W NxK row-major, bf16 in/out, fp32 accumulate\n"
              "   bytes = W + X + Y once each; FLOPs = 2MNK; %%SOL = max(bytes/copy, FLOPs/matmul ceiling) / time\n"
              "%-13s %-8s %5s %6s %6s %9s %9s %7s %7s %5s %5s %5s %s\n",
              "model", "matrix", "M", "N", "K", "med_us", "min_us", "GB/s", "TFLOP/s", "%copy", "%mm", "%SOL", "check");
  std::fflush(stdout);
  uint64_t seed = 1000;
  for (const auto& m : kModels)
    for (const auto& mat : matrices_of(m))
      for (int M : kBatchSizes) {
        const GemmResult r = bench.measure_gemm(m.name, mat, M, seed += 10);
        bench.gemms.push_back(r);
        const double gbps = r.bytes / r.us_median / 1e3, tflops = r.flops / r.us_median / 1e6;
        const double floor_us = std::max(r.bytes / copy_gbps / 1e3, r.flops / mm_tflops / 1e6);
        std::printf("%-13s %-8s %5d %6d %6d %9.1f %9.1f %7.0f %7.1f %5.0f %5.1f %5.0f %s\n", m.name, mat.name, M, mat.N,
                    mat.K, r.us_median, r.us_min, gbps, tflops, 100 * gbps / copy_gbps, 100 * tflops / mm_tflops,
                    100 * floor_us / r.us_median, gemm_ok(r) ? "ok" : "FAIL");
      }
  bench.release_pool();
  std::fflush(stdout);

  // Per-step totals: each GEMM timed alone, so launch gaps inside a real step are not included.
  std::vector<StepTotals> steps;
  for (const auto& m : kModels)
    for (int M : kBatchSizes) {
      StepTotals t;
      t.model = m.name;
      t.M = M;
      for (const auto& r : bench.gemms) {
        if (r.model != m.name || r.M != M) continue;
        const double floor_us = std::max(r.bytes / copy_gbps / 1e3, r.flops / mm_tflops / 1e6);
        if (r.matrix == "lm_head") {
          t.head_us = r.us_median;
          t.head_bytes = r.bytes;
          t.step_floor_us += floor_us;
        } else {
          t.layer_us += r.us_median;
          t.layer_bytes += r.bytes;
          t.layer_floor_us += floor_us;
        }
      }
      t.step_us = m.num_layers * t.layer_us + t.head_us;
      t.step_floor_us += m.num_layers * t.layer_floor_us;
      steps.push_back(t);
    }

  int num_ok = 0;
  for (const auto& r : bench.gemms) num_ok += gemm_ok(r);
  const bool pass = bench.copy_ok && bench.sanity.pass && gemm_ok(bench.ceiling) &&
                    num_ok == int(bench.gemms.size());

  std::printf("\n## summary gpu_baselines\n%s: copy ceiling %.0f GB/s (memcpy %.0f, copy16 %.0f, spec %.0f); matmul "
              "ceiling %.0f TFLOP/s (bf16 8192^3)\nsanity %s; %d/%zu shapes match fp64 and are finite%s\n",
              card.name.c_str(), copy_gbps, bench.copy_memcpy_gbps, bench.copy_kernel_gbps, card.spec_gbps(), mm_tflops,
              bench.sanity.pass ? "PASS" : "FAIL", num_ok, bench.gemms.size(),
              bench.hold_timed_out() ? "; WARNING: host could not queue ahead of the card (hold timed out)" : "");
  std::printf("cuBLASLt GEMMs of one step = layers x (qkv+o+gate_up+down) + lm_head, each timed alone:\n"
              "%-13s %5s %9s %7s %5s %9s %5s %9s %9s %5s\n",
              "model", "M", "layer_us", "GB/s", "%copy", "head_us", "%copy", "step_ms", "tok/s", "%SOL");
  for (const auto& t : steps) {
    const double layer_gbps = t.layer_bytes / t.layer_us / 1e3, head_gbps = t.head_bytes / t.head_us / 1e3;
    std::printf("%-13s %5d %9.1f %7.0f %5.0f %9.1f %5.0f %9.3f %9.0f %5.0f\n", t.model.c_str(), t.M, t.layer_us,
                layer_gbps, 100 * layer_gbps / copy_gbps, t.head_us, 100 * head_gbps / copy_gbps, t.step_us / 1e3,
                t.M / t.step_us * 1e6, 100 * t.step_floor_us / t.step_us);
  }
  std::printf("gpu_baselines: %s\n", pass ? "PASS" : "FAIL");

  if (!opt.json_path.empty()) {
    Json j;
    j.open(nullptr, '{').open("card", '{').text("name", card.name).num("cc", card.cc_major * 10 + card.cc_minor);
    j.num("sms", card.sms).num("mem_bytes", double(card.mem_bytes)).num("l2_bytes", double(card.l2_bytes));
    j.num("sm_clock_mhz", card.sm_clock_khz / 1e3).num("mem_clock_mhz", card.mem_clock_khz / 1e3);
    j.num("bus_bits", card.bus_bits).num("spec_gbps", card.spec_gbps()).boolean("ecc", card.ecc != 0);
    j.num("driver", card.driver).num("runtime", card.runtime).num("cublaslt", double(card.cublaslt_version)).close('}');
    j.open("options", '{').boolean("quick", opt.quick).num("warmup", opt.warmup()).num("reps", opt.reps()).close('}');
    j.open("copy", '{').num("bytes_per_buffer", bench.copy_bytes_per_buffer).num("memcpy_gbps", bench.copy_memcpy_gbps);
    j.num("kernel_gbps", bench.copy_kernel_gbps).num("ceiling_gbps", copy_gbps).boolean("ok", bench.copy_ok).close('}');
    j.open("matmul_ceiling", '{').num("tflops", mm_tflops).open("gemm", '[');
    json_gemm(j, bench.ceiling, copy_gbps, mm_tflops);
    j.close(']').close('}');
    json_check(j, "sanity", bench.sanity);
    j.open("gemms", '[');
    for (const auto& r : bench.gemms) json_gemm(j, r, copy_gbps, mm_tflops);
    j.close(']').open("steps", '[');
    for (const auto& t : steps) {
      j.open(nullptr, '{').text("model", t.model).num("M", t.M).num("layer_us", t.layer_us).num("layer_bytes", t.layer_bytes);
      j.num("head_us", t.head_us).num("head_bytes", t.head_bytes).num("step_us", t.step_us);
      j.num("step_floor_us", t.step_floor_us).close('}');
    }
    j.close(']').boolean("hold_timed_out", bench.hold_timed_out()).boolean("pass", pass).close('}');
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
