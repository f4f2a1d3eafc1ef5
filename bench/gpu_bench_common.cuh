// gpu_bench_common.cuh: what the GPU benchmarks share (bench/gpu_baselines.cu, bench/matmul_bench.cu): the
// card's description, random fill, the copy kernel and the copy ceiling, the stream hold and CUDA-event timer,
// cuBLASLt's bf16 matmul (the baseline), the four models' weight shapes and a small JSON writer. Each benchmark
// is its own program, so the kernels defined here are compiled once per program.
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cctype>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"  // CUDA_CHECK, LAUNCH_CHECK

// ---- Errors: CUDA_CHECK (kernels/cuda/cuda_check.h) and its cuBLAS counterpart; both end the program.
static void cublas_check(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  std::fprintf(stderr, "%s:%d: %s failed: %s\n", file, line, call, cublasLtGetStatusName(s));
  std::exit(2);
}
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)

using bf16 = __nv_bfloat16;
constexpr size_t kAlign = 256;  // cuBLASLt's heuristic assumes 256-byte aligned operands by default
constexpr size_t kWorkspaceBytes = 32u << 20;
static size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// ---- Device kernels: random fill, copy, mismatch and non-finite counts, the stream hold.
__host__ __device__ inline uint32_t hash32(uint64_t x) {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return static_cast<uint32_t>((x ^ (x >> 31)) >> 32);
}

// p[i] = uniform in [-1, 1), a function of (seed, i) only; never zeros.
__global__ void fill_uniform(bf16* __restrict__ p, size_t n, uint64_t seed) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const uint32_t h = hash32(i ^ (seed * 0xD1B54A32D192ED03ull));
    p[i] = __float2bfloat16_rn(float(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
  }
}

// dst = src, 16 bytes per access, four independent loads in flight per thread before the first store.
__global__ void copy16(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
    dst[i] = a;
    dst[i + stride] = b;
    dst[i + 2 * stride] = c;
    dst[i + 3 * stride] = d;
  }
  for (; i < n; i += stride) dst[i] = src[i];
}

__global__ void count_mismatch(const uint4* __restrict__ a, const uint4* __restrict__ b, size_t n,
                               unsigned long long* count) {
  unsigned long long local = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const uint4 x = a[i], y = b[i];
    local += (x.x != y.x) | (x.y != y.y) | (x.z != y.z) | (x.w != y.w);
  }
  if (local) atomicAdd(count, local);
}

__global__ void count_nonfinite(const bf16* __restrict__ p, size_t n, unsigned long long* count) {
  unsigned long long local = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    local += !isfinite(__bfloat162float(p[i]));
  if (local) atomicAdd(count, local);
}

// Holds the stream until the host has queued every timed launch, so host launch cost never shows up as
// idle gaps between the timed kernels. Gives up after timeout_ns and says so.
struct HoldFlags {
  int release;
  int timed_out;
};
__device__ inline uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__global__ void hold_stream(volatile HoldFlags* flags, uint64_t timeout_ns) {
  const uint64_t t0 = global_ns();
  while (flags->release == 0) {
    if (global_ns() - t0 > timeout_ns) {
      flags->timed_out = 1;
      return;
    }
    __nanosleep(2000);
  }
}

// ---- Host helpers.
struct Card {
  std::string name;
  int cc_major = 0, cc_minor = 0, sms = 0, max_threads_per_sm = 0, ecc = 0;
  size_t mem_bytes = 0, l2_bytes = 0;
  int sm_clock_khz = 0, mem_clock_khz = 0, bus_bits = 0, driver = 0, runtime = 0;
  size_t cublaslt_version = 0;
  double spec_gbps() const { return 2.0 * mem_clock_khz * 1e3 * (bus_bits / 8.0) / 1e9; }  // DDR: 2 transfers/clock
};

static Card read_card() {
  Card c;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  c.name = p.name;
  c.cc_major = p.major;
  c.cc_minor = p.minor;
  c.mem_bytes = p.totalGlobalMem;
  // CUDA 13 dropped the clock fields from cudaDeviceProp; the attributes remain.
  CUDA_CHECK(cudaDeviceGetAttribute(&c.sms, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&c.max_threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, dev));
  int l2 = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  c.l2_bytes = size_t(l2);
  CUDA_CHECK(cudaDeviceGetAttribute(&c.sm_clock_khz, cudaDevAttrClockRate, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&c.mem_clock_khz, cudaDevAttrMemoryClockRate, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&c.bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&c.ecc, cudaDevAttrEccEnabled, dev));
  CUDA_CHECK(cudaDriverGetVersion(&c.driver));
  CUDA_CHECK(cudaRuntimeGetVersion(&c.runtime));
  c.cublaslt_version = cublasLtGetVersion();
  return c;
}

static void fill(bf16* p, size_t n, uint64_t seed, cudaStream_t s, int sms) {
  fill_uniform<<<sms * 8, 256, 0, s>>>(p, n, seed);
  LAUNCH_CHECK();
}

// Times launch(i): `warmup` untimed calls, then `reps` calls each between its own pair of events, queued behind
// hold_stream so the card runs them back to back. Call i should use input copy i % copies (rotation).
// If the hold ever times out (the card never saw the host's release), later runs are timed without it.
class Timer {
 public:
  static constexpr int kMaxReps = 64;
  explicit Timer(cudaStream_t stream) : stream_(stream), start_(kMaxReps), stop_(kMaxReps) {
    for (int i = 0; i < kMaxReps; ++i) {
      CUDA_CHECK(cudaEventCreate(&start_[i]));
      CUDA_CHECK(cudaEventCreate(&stop_[i]));
    }
    CUDA_CHECK(cudaHostAlloc(&flags_, sizeof(HoldFlags), cudaHostAllocMapped));
    CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&flags_dev_), flags_, 0));
  }
  ~Timer() {
    for (size_t i = 0; i < start_.size(); ++i) {
      cudaEventDestroy(start_[i]);
      cudaEventDestroy(stop_[i]);
    }
    cudaFreeHost(flags_);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  bool hold_timed_out = false;

  template <class Launch>
  std::vector<double> run(int warmup, int reps, Launch&& launch) {  // sorted per-call µs
    reps = std::min(reps, kMaxReps);
    for (int i = 0; i < warmup; ++i) launch(i);
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    reinterpret_cast<volatile HoldFlags*>(flags_)->release = 0;
    reinterpret_cast<volatile HoldFlags*>(flags_)->timed_out = 0;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!hold_timed_out) {  // after one timeout, time without the hold rather than wait on it again
      hold_stream<<<1, 1, 0, stream_>>>(flags_dev_, 1'000'000'000ull);
      LAUNCH_CHECK();
    }
    for (int r = 0; r < reps; ++r) {
      CUDA_CHECK(cudaEventRecord(start_[r], stream_));
      launch(warmup + r);
      CUDA_CHECK(cudaEventRecord(stop_[r], stream_));
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    reinterpret_cast<volatile HoldFlags*>(flags_)->release = 1;
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (reinterpret_cast<volatile HoldFlags*>(flags_)->timed_out) hold_timed_out = true;
    std::vector<double> us(reps);
    for (int r = 0; r < reps; ++r) {
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start_[r], stop_[r]));
      us[r] = 1e3 * ms;
    }
    std::sort(us.begin(), us.end());
    return us;
  }

 private:
  cudaStream_t stream_;
  std::vector<cudaEvent_t> start_, stop_;
  HoldFlags* flags_ = nullptr;
  HoldFlags* flags_dev_ = nullptr;
};

static double median(const std::vector<double>& sorted) {
  const size_t n = sorted.size();
  return n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

// Y (M×N, row-major) = X (M×K, row-major) · Wᵀ, W (N×K, row-major); bf16 in and out, fp32 accumulate.
// cuBLASLt is column-major, so it computes Yᵀ (N×M) = op_T(W viewed as K×N) · (X viewed as K×M): the "TN" case.
class LtGemm {
 public:
  LtGemm() {
    CUBLAS_CHECK(cublasLtCreate(&handle_));
    CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
  }
  ~LtGemm() {
    release();
    cublasLtDestroy(handle_);
    cudaFree(workspace_);
  }
  // Picks cuBLASLt's first heuristic algorithm for the shape; false if it offers none.
  bool plan(int M, int N, int K) {
    release();
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a_, CUDA_R_16BF, K, N, K));  // W
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b_, CUDA_R_16BF, K, M, K));  // X
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c_, CUDA_R_16BF, N, M, N));  // Y
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = kWorkspaceBytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(handle_, desc_, a_, b_, c_, c_, pref, 1, &result, &found);
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (s == CUBLAS_STATUS_NOT_SUPPORTED || found == 0) return false;
    CUBLAS_CHECK(s);
    algo_ = result.algo;
    algo_workspace_ = result.workspaceSize;
    return true;
  }
  void run(const bf16* W, const bf16* X, bf16* Y, cudaStream_t stream) {
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(handle_, desc_, &alpha, W, a_, X, b_, &beta, Y, c_, Y, c_, &algo_, workspace_,
                                kWorkspaceBytes, stream));
  }
  size_t algo_workspace() const { return algo_workspace_; }

 private:
  void release() {
    if (desc_) cublasLtMatmulDescDestroy(desc_);
    if (a_) cublasLtMatrixLayoutDestroy(a_);
    if (b_) cublasLtMatrixLayoutDestroy(b_);
    if (c_) cublasLtMatrixLayoutDestroy(c_);
    desc_ = nullptr;
    a_ = b_ = c_ = nullptr;
  }
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, c_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
  size_t algo_workspace_ = 0;
};

// ---- The weight matrices benchmarked: every one of a layer, and the LM head, of four models.
struct ModelShape {
  const char* name;
  int hidden, num_heads, num_kv_heads, head_dim, ffn, vocab, num_layers;
};
constexpr ModelShape kModels[] = {
    {"SmolLM2-135M", 576, 9, 3, 64, 1536, 49152, 30},
    {"Llama-3.2-1B", 2048, 32, 8, 64, 8192, 128256, 16},
    {"Qwen2.5-1.5B", 1536, 12, 2, 128, 8960, 151936, 28},
    {"Qwen2.5-7B", 3584, 28, 4, 128, 18944, 152064, 28},
};
constexpr int kBatchSizes[] = {1, 8, 32, 128, 512, 2048};
struct MatrixShape {
  const char* name;
  int N, K;
};
static std::vector<MatrixShape> matrices_of(const ModelShape& m) {  // the layer's four, then the LM head
  return {{"qkv", (m.num_heads + 2 * m.num_kv_heads) * m.head_dim, m.hidden},
          {"o", m.hidden, m.num_heads * m.head_dim},
          {"gate_up", 2 * m.ffn, m.hidden},
          {"down", m.hidden, m.ffn},
          {"lm_head", m.vocab, m.hidden}};
}

// ---- Picking shapes for a profiler (`--only`, `--reps`, `--no-ceilings`): a benchmark run under Nsight Compute
// should launch only the kernels worth reading, a few times each. `--only` takes comma-separated keys of
// colon-separated fields, the first a model's name (any case: llama-3.2-1b); each bench says what the rest are.
inline std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
inline std::vector<std::string> split_on(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t at = 0;
  for (;;) {
    const size_t end = s.find(sep, at);
    out.push_back(s.substr(at, end == std::string::npos ? std::string::npos : end - at));
    if (end == std::string::npos) return out;
    at = end + 1;
  }
}
// A positive integer field, else -1.
inline int positive_field(const std::string& s) {
  if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return -1;
  const int v = std::atoi(s.c_str());
  return v > 0 ? v : -1;
}
inline const ModelShape* model_named(const std::string& name) {
  for (const ModelShape& m : kModels)
    if (lower(m.name) == lower(name)) return &m;
  return nullptr;
}
// --only KEYS, --reps W,R (warm-up and timed calls per shape: W >= 0, R >= 1), --no-ceilings.
struct ProfileOptions {
  std::string only;
  int warmup_n = -1, reps_n = -1;  // -1: the bench's own
  bool no_ceilings = false;
  // True when argv[i] is one of these flags (i then past its value); `bad` set, with a line on stderr, when its
  // value is malformed.
  bool parse(int argc, char** argv, int& i, bool& bad) {
    const std::string a = argv[i];
    if (a == "--no-ceilings") return no_ceilings = true;
    if ((a != "--only" && a != "--reps") || i + 1 >= argc) return false;
    const std::string v = argv[++i];
    if (a == "--only") {
      only = v;
      return true;
    }
    const std::vector<std::string> f = split_on(v, ',');
    warmup_n = f.size() == 2 ? (f[0] == "0" ? 0 : positive_field(f[0])) : -1;
    reps_n = f.size() == 2 ? positive_field(f[1]) : -1;
    if (warmup_n < 0 || reps_n < 1) {
      std::fprintf(stderr, "--reps: W,R (warm-up calls >= 0, timed calls >= 1), not \"%s\"\n", v.c_str());
      bad = true;
    }
    return true;
  }
  static constexpr const char* kUsage =
      "  --only, --reps W,R, --no-ceilings: a few shapes, a few calls, no ceiling kernels (for a profiler)\n";
};

// ---- Reporting.

// A minimal JSON writer, enough for objects and arrays of them. It uses snprintf, not iostreams: the static
// libstdc++'s stream code pulls in symbols of a newer glibc than the GPU machine may have.
class Json {
 public:
  const std::string& str() const { return out_; }
  Json& open(const char* key, char bracket) { return sep(key), out_ += bracket, first_ = true, *this; }
  Json& close(char bracket) { return out_ += bracket, first_ = false, *this; }
  Json& num(const char* key, double v) {
    sep(key);
    char buf[32];
    const bool integral = std::fabs(v) < 9007199254740992.0 && v == std::floor(v);  // exact below 2^53
    std::snprintf(buf, sizeof buf, integral ? "%.0f" : "%.10g", v);
    out_ += std::isfinite(v) ? buf : "null";
    return *this;
  }
  Json& boolean(const char* key, bool v) { return sep(key), out_ += v ? "true" : "false", *this; }
  Json& text(const char* key, const std::string& v) {
    sep(key);
    out_ += '"';
    for (char ch : v) {
      if (ch == '"' || ch == '\\') out_ += '\\';
      if (static_cast<unsigned char>(ch) >= 0x20) out_ += ch;
    }
    out_ += '"';
    return *this;
  }

 private:
  void sep(const char* key) {
    if (!first_) out_ += ',';
    first_ = false;
    if (key) out_ += std::string("\"") + key + "\":";
  }
  std::string out_;
  bool first_ = true;
};

// ---- The copy ceiling. Bytes counted: each byte read once and written once, 2 × buffer per copy. The faster of
// cudaMemcpyAsync and copy16 is the ceiling; both copies are checked word for word afterwards.
struct CopyCeiling {
  double memcpy_gbps = 0, kernel_gbps = 0, bytes_per_buffer = 0;
  bool ok = true;
  double gbps() const { return std::max(memcpy_gbps, kernel_gbps); }
};

inline unsigned long long count_mismatches(const uint4* a, const uint4* b, size_t n, cudaStream_t stream, int sms) {
  unsigned long long* counter = nullptr;
  CUDA_CHECK(cudaMalloc(&counter, sizeof(unsigned long long)));
  CUDA_CHECK(cudaMemsetAsync(counter, 0, sizeof(unsigned long long), stream));
  count_mismatch<<<sms * 8, 256, 0, stream>>>(a, b, n, counter);
  LAUNCH_CHECK();
  unsigned long long v = 0;
  CUDA_CHECK(cudaMemcpyAsync(&v, counter, sizeof(v), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CUDA_CHECK(cudaFree(counter));
  return v;
}

inline CopyCeiling measure_copy_ceiling(Timer& timer, cudaStream_t stream, const Card& card, int reps) {
  CopyCeiling c;
  size_t free_bytes = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  size_t n_bytes = size_t(2) << 30;
  if (free_bytes < 3 * n_bytes) n_bytes = free_bytes / 3 / (64u << 20) * (64u << 20);
  c.bytes_per_buffer = double(n_bytes);
  bf16 *src = nullptr, *dst = nullptr;
  CUDA_CHECK(cudaMalloc(&src, n_bytes));
  CUDA_CHECK(cudaMalloc(&dst, n_bytes));
  fill(src, n_bytes / sizeof(bf16), 1, stream, card.sms);
  const size_t n16 = n_bytes / 16;
  const int blocks = card.sms * (card.max_threads_per_sm / 256);
  auto timed = [&](auto&& launch, double& gbps, const char* what) {
    CUDA_CHECK(cudaMemsetAsync(dst, 0xFF, n_bytes, stream));
    const auto us = timer.run(2, reps, launch);
    gbps = 2.0 * double(n_bytes) / median(us) / 1e3;
    const unsigned long long bad = count_mismatches(reinterpret_cast<const uint4*>(src), reinterpret_cast<const uint4*>(dst), n16, stream, card.sms);
    if (bad) {
      c.ok = false;
      std::printf("FAIL copy %s: %llu of %zu 16-byte words differ\n", what, bad, n16);
    }
  };
  timed([&](int) { CUDA_CHECK(cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToDevice, stream)); },
        c.memcpy_gbps, "cudaMemcpyAsync");
  timed(
      [&](int) {
        copy16<<<blocks, 256, 0, stream>>>(reinterpret_cast<const uint4*>(src), reinterpret_cast<uint4*>(dst), n16);
        LAUNCH_CHECK();
      },
      c.kernel_gbps, "copy16");
  CUDA_CHECK(cudaFree(src));
  CUDA_CHECK(cudaFree(dst));
  return c;
}
