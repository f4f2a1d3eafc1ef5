// The CUDA bf16 matmul (kernels/cuda/matmul.h) against its CPU twin (kernels/cpu/matmul_bf16.h): every kernel,
// every element, on seeded random inputs with real and odd shapes; the fusions; and batch invariance (a row's
// bits never depend on M or on the kernel the dispatcher picks). Skips every test when no GPU is present.
//
// Tolerance, per element: |gpu - twin| <= atol + rtol·|twin| with
//   atol = 2^-18 · Σ_k |x_k·w_k|   (both sum the same exact bf16 products in fp32, in different orders: the
//                                   tensor core adds 16 products per step, the twin one at a time);
//   rtol = 2^-7 for bf16 outputs   (one bf16 ulp: two fp32 sums that differ slightly may round to neighbours),
//          2^-20 for fp32 outputs.
// SiluMul carries the gate's and up's tolerances through silu(g)·u (silu's slope is below 1.1).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/matmul_bf16.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/matmul.h"
#include "tests/gpu/gpu_test_util.h"

namespace flint::cuda {
namespace {

float to_f32(bf16_bits h) { return std::bit_cast<float>(uint32_t(h) << 16); }
bf16_bits to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  return bf16_bits((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

std::vector<bf16_bits> random_bf16(size_t n, uint32_t seed) {  // uniform in [-1, 1): never zeros
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<bf16_bits> v(n);
  for (auto& b : v) b = to_bf16(dist(rng));
  return v;
}

using gpu_test::DeviceBuffer;
using gpu_test::have_gpu;

// The twin over row slices on every core: allowed because a row's result depends only on that row.
void twin_parallel(const MatmulParams& p) {
  const int threads = int(std::clamp(std::thread::hardware_concurrency(), 1u, 32u));
  const int rows = (p.M + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int m0 = 0; m0 < p.M; m0 += rows) {
    MatmulParams s = p;
    s.M = std::min(rows, p.M - m0);
    s.x = p.x + int64_t(m0) * p.ldx;
    const size_t esz = p.out_type == MatmulOut::F32 ? 4 : 2;
    s.y = static_cast<char*>(p.y) + size_t(m0) * p.ldy * esz;
    if (p.epilogue == MatmulEpilogue::Qkv) {
      s.k_out = static_cast<char*>(p.k_out) + size_t(m0) * p.ld_k * esz;
      s.v_out = static_cast<char*>(p.v_out) + size_t(m0) * p.ld_v * esz;
    }
    pool.emplace_back([s] { cpu::matmul_bf16(s); });
  }
  for (auto& t : pool) t.join();
}


// One problem: inputs on host and device, the twin's fp32 sums (no epilogue) and Σ|x·w| per output.
struct Problem {
  int M, N, K;
  int64_t ldx, ldw;
  std::vector<bf16_bits> x, w, bias;
  std::vector<float> sums, abs_sums;  // (M, N), bias included in sums when with_bias
  bool with_bias;

  Problem(int M_, int N_, int K_, bool with_bias_, uint32_t seed, int pad = 0)
      : M(M_), N(N_), K(K_), ldx(K_ + pad), ldw(K_ + pad), with_bias(with_bias_) {
    x = random_bf16(size_t(M) * ldx, seed);
    w = random_bf16(size_t(N) * ldw, seed + 1);
    bias = random_bf16(size_t(N), seed + 2);
    sums.assign(size_t(M) * N, NAN);
    abs_sums.assign(size_t(M) * N, NAN);
    MatmulParams p = base();
    p.out_type = MatmulOut::F32;
    p.y = sums.data();
    p.ldy = N;
    twin_parallel(p);
    std::vector<bf16_bits> ax(x), aw(w), ab(bias);  // |x|, |w|: the twin then sums |products|
    for (auto* v : {&ax, &aw, &ab})
      for (auto& b : *v) b &= 0x7FFF;
    p.x = ax.data(), p.w = aw.data(), p.maybe_bias = with_bias ? ab.data() : nullptr, p.y = abs_sums.data();
    twin_parallel(p);
  }
  MatmulParams base() const {
    MatmulParams p;
    p.M = M, p.N = N, p.K = K, p.x = x.data(), p.ldx = ldx, p.w = w.data(), p.ldw = ldw;
    p.maybe_bias = with_bias ? bias.data() : nullptr;
    return p;
  }
  double atol(int m, int n) const { return std::ldexp(double(abs_sums[size_t(m) * N + n]), -18); }
};

double rtol(MatmulOut t) { return t == MatmulOut::BF16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -20); }

// The GPU run of p (host pointers in p are replaced by device copies); returns y (and k, v for Qkv) as floats.
struct GpuOut {
  std::vector<float> y, k, v;
};
GpuOut run_gpu(const Problem& pb, MatmulParams p, MatmulKernel kernel) {
  DeviceBuffer x(pb.x.size() * 2), w(pb.w.size() * 2), bias(pb.bias.size() * 2);
  x.upload(pb.x), w.upload(pb.w), bias.upload(pb.bias);
  const size_t esz = p.out_type == MatmulOut::F32 ? 4 : 2;
  const int y_cols = p.epilogue == MatmulEpilogue::SiluMul ? pb.N / 2 : p.epilogue == MatmulEpilogue::Qkv ? p.num_q : pb.N;
  DeviceBuffer y(size_t(pb.M) * y_cols * esz), k(size_t(pb.M) * p.num_kv * esz), v(size_t(pb.M) * p.num_kv * esz);
  DeviceBuffer ws(std::max<size_t>(matmul_workspace_bytes(pb.M, pb.N, pb.K, kernel), 16));
  y.poison(), k.poison(), v.poison(), ws.poison();
  p.x = x.as<bf16_bits>(), p.w = w.as<bf16_bits>(), p.maybe_bias = pb.with_bias ? bias.as<bf16_bits>() : nullptr;
  p.y = y.as<void>(), p.ldy = y_cols;
  if (p.epilogue == MatmulEpilogue::Qkv) p.k_out = k.as<void>(), p.ld_k = p.num_kv, p.v_out = v.as<void>(), p.ld_v = p.num_kv;
  p.workspace = ws.as<void>(), p.workspace_bytes = ws.bytes();
  std::string why;
  const cudaError_t e = matmul(p, nullptr, kernel, &why);
  EXPECT_EQ(e, cudaSuccess) << cudaGetErrorName(e) << ": " << why;
  CUDA_CHECK(cudaDeviceSynchronize());
  auto fetch = [&](const DeviceBuffer& b, size_t n) {
    std::vector<float> out(n);
    if (esz == 4) {
      CUDA_CHECK(cudaMemcpy(out.data(), b.as<void>(), n * 4, cudaMemcpyDeviceToHost));
    } else {
      std::vector<bf16_bits> h(n);
      CUDA_CHECK(cudaMemcpy(h.data(), b.as<void>(), n * 2, cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < n; ++i) out[i] = to_f32(h[i]);
    }
    return out;
  };
  GpuOut out;
  out.y = fetch(y, size_t(pb.M) * y_cols);
  if (p.epilogue == MatmulEpilogue::Qkv) out.k = fetch(k, size_t(pb.M) * p.num_kv), out.v = fetch(v, size_t(pb.M) * p.num_kv);
  return out;
}

// Checks got (M × cols) against want(m, col) with tolerance tol(m, col); records the worst ratio.
template <class Want, class Tol>
void expect_close(const std::string& what, const std::string& kernel, const std::vector<float>& got, int M, int cols,
                  Want&& want, Tol&& tol) {
  double worst = 0, worst_abs = 0;
  int bad = 0, first_m = -1, first_c = -1;
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < cols; ++c) {
      const double g = got[size_t(m) * cols + c], r = want(m, c), t = tol(m, c), err = std::fabs(g - r);
      if (!(err <= t)) {  // NaN (an unwritten output) fails too
        if (bad++ == 0) first_m = m, first_c = c;
        continue;
      }
      worst = std::max(worst, err / t);
      worst_abs = std::max(worst_abs, err);
    }
  gpu_test::summary_add(kernel, bad ? INFINITY : worst, worst_abs);
  EXPECT_EQ(bad, 0) << what << " [" << kernel << "]: " << bad << " of " << size_t(M) * cols
                    << " outside tolerance; first at row " << first_m << " col " << first_c << ": got "
                    << (bad ? got[size_t(first_m) * cols + first_c] : 0.0f) << ", twin "
                    << (bad ? want(first_m, first_c) : 0.0) << ", tol " << (bad ? tol(first_m, first_c) : 0.0);
  std::printf("  %-44s %-8s max |err| %.3g = %.3f of tolerance\n", what.c_str(), kernel.c_str(), worst_abs, worst);
}

std::vector<MatmulKernel> kernels_for(int M) {
  std::vector<MatmulKernel> ks = {MatmulKernel::Auto, MatmulKernel::Prefill, MatmulKernel::Cublas};
  if (M <= kDecodeMaxRows) ks.push_back(MatmulKernel::Decode);
  if (matmul_wgmma_available()) ks.push_back(MatmulKernel::PrefillWgmma);
  // Mid is not here: RowBitsDoNotDependOnMOrKernel and MidKernelGivesThePrefillKernelsBitsUpTo128Rows hold it to the
  // prefill kernel's bits, row for row, and that kernel is held to the twin here.
  return ks;
}

std::string shape_name(const char* tag, int M, int N, int K) {
  return std::string(tag) + " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K);
}

constexpr int kRows[] = {1, 3, 16, 17, 64, 300, 2048};

struct Shape {
  const char* tag;
  int N, K;
  bool bias;
  MatmulOut out;
  int max_M;  // the twin's cost bounds M on big weights
  int pad;    // extra elements per row (strided x and w)
};
constexpr Shape kShapes[] = {
    {"smollm2.o", 576, 576, false, MatmulOut::BF16, 2048, 0},
    {"smollm2.down", 576, 1536, true, MatmulOut::BF16, 2048, 0},
    {"odd.896x4864", 896, 4864, false, MatmulOut::F32, 2048, 0},
    {"odd.1000x999", 1000, 999, true, MatmulOut::BF16, 2048, 0},  // K % 8 != 0: the element-wise load path
    {"odd.strided", 333, 520, false, MatmulOut::F32, 300, 8},      // ldx, ldw = K + 8
    // 17 steps in 2 splits of 9: a split ends inside a prefill stage (the wgmma kernel's 64-value stages), and at
    // M = 300 the 18 tiles fill the emulator's 16 SMs, so there the splits are folded mid-stage.
    {"odd.fold", 704, 520, false, MatmulOut::F32, 300, 0},
    {"llama1b.qkv", 3072, 2048, false, MatmulOut::BF16, 300, 0},
    {"qwen7b.down", 3584, 18944, false, MatmulOut::BF16, 17, 0},  // long K, split
    {"fold.2048x2048", 2048, 2048, true, MatmulOut::F32, 2048, 0},  // split in 8; prefill folds them at M=2048
    {"qwen1.5b.lm_head", 151936, 1536, false, MatmulOut::BF16, 3, 0},
};

TEST(MatmulGpu, EveryKernelMatchesTheTwinOnEveryElement) {
  REQUIRE_GPU();
  uint32_t seed = 100;
  for (const Shape& s : kShapes)
    for (int M : kRows) {
      if (M > s.max_M) continue;
      seed += 10;
      if (gpu_test::emu_skips(double(M) * s.N * s.K)) continue;
      const Problem pb(M, s.N, s.K, s.bias, seed, s.pad);
      for (MatmulKernel kernel : kernels_for(M)) {
        MatmulParams p = pb.base();
        p.out_type = s.out;
        const GpuOut got = run_gpu(pb, p, kernel);
        expect_close(shape_name(s.tag, M, s.N, s.K), matmul_kernel_name(kernel), got.y, M, s.N,
                     [&](int m, int n) { return double(pb.sums[size_t(m) * s.N + n]); },
                     [&](int m, int n) { return pb.atol(m, n) + rtol(s.out) * std::fabs(pb.sums[size_t(m) * s.N + n]); });
      }
    }
}

TEST(MatmulGpu, QkvFusionWritesThreeOutputs) {
  REQUIRE_GPU();
  struct Qkv {
    const char* tag;
    int num_q, num_kv, K;
    bool bias;
  };
  for (const Qkv& q : {Qkv{"smollm2.qkv", 576, 192, 576, false}, Qkv{"qwen1.5b.qkv", 1536, 256, 1536, true}})
    for (int M : {1, 17, 300}) {
      const int N = q.num_q + 2 * q.num_kv;
      if (gpu_test::emu_skips(double(M) * N * q.K)) continue;
      const Problem pb(M, N, q.K, q.bias, 7 + M);
      for (MatmulKernel kernel : kernels_for(M)) {
        MatmulParams p = pb.base();
        p.epilogue = MatmulEpilogue::Qkv, p.num_q = q.num_q, p.num_kv = q.num_kv, p.out_type = MatmulOut::BF16;
        const GpuOut got = run_gpu(pb, p, kernel);
        const std::pair<const std::vector<float>*, int> parts[] = {{&got.y, 0}, {&got.k, q.num_q}, {&got.v, q.num_q + q.num_kv}};
        for (const auto& part : parts) {
          const std::vector<float>* out = part.first;
          const int first = part.second;  // a plain variable: lambdas may capture it (clang: not a binding)
          const int cols = first == 0 ? q.num_q : q.num_kv;
          expect_close(shape_name(q.tag, M, N, q.K) + (first == 0 ? " q" : first == q.num_q ? " k" : " v"),
                       matmul_kernel_name(kernel), *out, M, cols,
                       [&](int m, int c) { return double(pb.sums[size_t(m) * N + first + c]); },
                       [&](int m, int c) {
                         return pb.atol(m, first + c) + rtol(MatmulOut::BF16) * std::fabs(pb.sums[size_t(m) * N + first + c]);
                       });
        }
      }
    }
}

TEST(MatmulGpu, GateUpFusionAppliesSiluMul) {
  REQUIRE_GPU();
  struct GateUp {
    const char* tag;
    int F, K;
    bool bias;
  };
  for (const GateUp& gu : {GateUp{"smollm2.gate_up", 1536, 576, false}, GateUp{"llama1b.gate_up", 8192, 2048, true}})
    for (int M : {1, 17, 300}) {
      const int N = 2 * gu.F;
      if (gpu_test::emu_skips(double(M) * N * gu.K)) continue;
      const Problem pb(M, N, gu.K, gu.bias, 3 + M);  // w's rows are taken as already interleaved
      for (MatmulKernel kernel : kernels_for(M)) {
        MatmulParams p = pb.base();
        p.epilogue = MatmulEpilogue::SiluMul, p.out_type = MatmulOut::F32;
        const GpuOut got = run_gpu(pb, p, kernel);
        auto at = [&](int m, int f, bool up) { return size_t(m) * N + gate_up_row(f, up); };
        expect_close(shape_name(gu.tag, M, N, gu.K), matmul_kernel_name(kernel), got.y, M, gu.F,
                     [&](int m, int f) {
                       const double g = pb.sums[at(m, f, false)], u = pb.sums[at(m, f, true)];
                       return g / (1.0 + std::exp(-g)) * u;
                     },
                     [&](int m, int f) {
                       const double g = pb.sums[at(m, f, false)], u = pb.sums[at(m, f, true)];
                       const double silu = g / (1.0 + std::exp(-g));
                       const double tg = pb.atol(m, gate_up_row(f, false)), tu = pb.atol(m, gate_up_row(f, true));
                       return 1.1 * tg * (std::fabs(u) + tu) + std::fabs(silu) * tu + 1e-6 * std::fabs(silu * u);
                     });
      }
    }
}

// Batch invariance: every row's output bits from any M (and from decode, prefill or the dispatcher) equal that
// row's bits in the M = 2048 prefill run. cuBLAS is not held to this (see matmul.h).
TEST(MatmulGpu, RowBitsDoNotDependOnMOrKernel) {
  REQUIRE_GPU();
  struct Inv {
    const char* tag;
    int N, K;
    MatmulEpilogue epilogue;
    MatmulOut out;
  };
  for (const Inv& s : {Inv{"odd.896x4864", 896, 4864, MatmulEpilogue::None, MatmulOut::F32},
                       Inv{"odd.1000x999", 1000, 999, MatmulEpilogue::None, MatmulOut::F32},
                       Inv{"odd.fold", 704, 520, MatmulEpilogue::None, MatmulOut::F32},
                       Inv{"smollm2.o", 576, 576, MatmulEpilogue::None, MatmulOut::BF16},
                       Inv{"fold.2048x2048", 2048, 2048, MatmulEpilogue::None, MatmulOut::BF16},
                       Inv{"smollm2.gate_up", 3072, 576, MatmulEpilogue::SiluMul, MatmulOut::F32}}) {
    // The reference run's M: 2048 on a device; on the emulator the largest row count its work bound allows.
    int max_M = 2048;
    if (gpu_test::kEmulated) {
      max_M = 0;
      for (int M : kRows)
        if (double(M) * s.N * s.K <= gpu_test::emu_work_bound()) max_M = M;
      if (max_M < 64 && gpu_test::emu_skips(double(64) * s.N * s.K)) continue;
    }
    const int cols = s.epilogue == MatmulEpilogue::SiluMul ? s.N / 2 : s.N;
    // Bits are compared GPU run against GPU run: no twin needed.
    const std::vector<bf16_bits> x = random_bf16(size_t(max_M) * s.K, 77), w = random_bf16(size_t(s.N) * s.K, 78);
    DeviceBuffer dx(x.size() * 2), dw(w.size() * 2);
    dx.upload(x), dw.upload(w);
    const size_t esz = s.out == MatmulOut::F32 ? 4 : 2;
    auto run = [&](int M, MatmulKernel kernel) {
      DeviceBuffer y(size_t(M) * cols * esz), ws(std::max<size_t>(matmul_workspace_bytes(M, s.N, s.K, kernel), 16));
      y.poison();
      MatmulParams p;
      p.M = M, p.N = s.N, p.K = s.K, p.x = dx.as<bf16_bits>(), p.ldx = s.K, p.w = dw.as<bf16_bits>(), p.ldw = s.K;
      p.epilogue = s.epilogue, p.out_type = s.out, p.y = y.as<void>(), p.ldy = cols;
      p.workspace = ws.as<void>(), p.workspace_bytes = ws.bytes();
      std::string why;
      EXPECT_EQ(matmul(p, nullptr, kernel, &why), cudaSuccess) << why;
      std::vector<uint8_t> bits(y.bytes());
      CUDA_CHECK(cudaMemcpy(bits.data(), y.as<void>(), bits.size(), cudaMemcpyDeviceToHost));
      return bits;
    };
    const std::vector<uint8_t> all = run(max_M, MatmulKernel::Prefill);
    const size_t row_bytes = size_t(cols) * esz;
    for (int M : kRows) {
      if (M > max_M) break;
      for (MatmulKernel kernel : {MatmulKernel::Auto, MatmulKernel::Decode, MatmulKernel::Mid, MatmulKernel::Prefill,
                                  MatmulKernel::PrefillWgmma}) {
        if (kernel == MatmulKernel::Decode && M > kDecodeMaxRows) continue;
        if (kernel == MatmulKernel::Mid && M > kMidMaxRows) continue;
        if (kernel == MatmulKernel::PrefillWgmma && !matmul_wgmma_available()) continue;
        if (kernel == MatmulKernel::Auto && matmul_pick(M) == MatmulKernel::Cublas) continue;  // FLINT_MATMUL=cublas
        const std::vector<uint8_t> got = run(M, kernel);
        int differing = 0, first = -1;
        for (int m = 0; m < M; ++m)
          if (std::memcmp(got.data() + m * row_bytes, all.data() + m * row_bytes, row_bytes) != 0)
            if (differing++ == 0) first = m;
        EXPECT_EQ(differing, 0) << s.tag << " M=" << M << " " << matmul_kernel_name(kernel) << ": " << differing
                                << " rows differ from the M=" << max_M << " prefill run, first row " << first;
      }
    }
    std::printf("  %-44s batch invariant over M in {1..%d} and decode/mid/prefill/prefill_wgmma/auto\n", s.tag, max_M);
  }
}

void expect_bits_equal(const char* check, const std::vector<float>& got, const std::vector<float>& want,
                       const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], 4) != 0 && bad++ == 0) first = i;
  gpu_test::summary_add("leave_partials", bad ? INFINITY : 0.0, bad ? INFINITY : 0.0);
  EXPECT_EQ(bad, 0u) << what << " " << check << ": " << bad << " of " << got.size() << " differ, first at " << first
                     << " (" << got[first] << " vs " << want[first] << ")";
}

// The mid kernel (FLINT_MATMUL=mid) at the row counts the shared tests do not reach (its 12- and 16-group instances):
// every row bit for bit the prefill kernel's, unsplit, split-K, SiluMul and through the split partials' reduction.
TEST(MatmulGpu, MidKernelGivesThePrefillKernelsBitsUpTo128Rows) {
  REQUIRE_GPU();
  struct Case {
    const char* tag;
    int N, K;
    MatmulEpilogue epilogue;
  };
  for (const Case& c : {Case{"smollm2.o", 576, 576, MatmulEpilogue::None}, Case{"odd.fold", 704, 520, MatmulEpilogue::None},
                        Case{"smollm2.down", 576, 1536, MatmulEpilogue::None},
                        Case{"smollm2.gate_up", 3072, 576, MatmulEpilogue::SiluMul}}) {
    if (gpu_test::emu_skips(double(3 * 128 + 100 + 33) * c.N * c.K)) continue;
    const int cols = c.epilogue == MatmulEpilogue::SiluMul ? c.N / 2 : c.N;
    const std::vector<bf16_bits> x = random_bf16(size_t(128) * c.K, 91), w = random_bf16(size_t(c.N) * c.K, 92);
    DeviceBuffer dx(x.size() * 2), dw(w.size() * 2);
    dx.upload(x), dw.upload(w);
    auto run = [&](int M, MatmulKernel kernel) {
      DeviceBuffer y(size_t(M) * cols * 4), ws(std::max<size_t>(matmul_workspace_bytes(M, c.N, c.K, kernel), 16));
      y.poison(), ws.poison();
      MatmulParams p;
      p.M = M, p.N = c.N, p.K = c.K, p.x = dx.as<bf16_bits>(), p.ldx = c.K, p.w = dw.as<bf16_bits>(), p.ldw = c.K;
      p.epilogue = c.epilogue, p.out_type = MatmulOut::F32, p.y = y.as<void>(), p.ldy = cols;
      p.workspace = ws.as<void>(), p.workspace_bytes = ws.bytes();
      std::string why;
      EXPECT_EQ(matmul(p, nullptr, kernel, &why), cudaSuccess) << why;
      return y.download<float>(size_t(M) * cols);
    };
    const std::vector<float> want = run(128, MatmulKernel::Prefill);
    for (int M : {33, 100, 128}) {
      const std::vector<float> got = run(M, MatmulKernel::Mid);
      size_t bad = 0;
      for (size_t i = 0; i < got.size(); ++i) bad += std::memcmp(&got[i], &want[i], 4) != 0;
      gpu_test::summary_add("mid_bits", bad ? INFINITY : 0.0, bad ? INFINITY : 0.0);
      EXPECT_EQ(bad, 0u) << shape_name(c.tag, M, c.N, c.K) << ": " << bad << " of " << got.size()
                         << " mid outputs differ from the prefill kernel's";
    }
  }
}

// leave_partials (the O and down projections, whose reduction add_rmsnorm does): the launcher reports the splits it
// left, y stays unwritten, and the slices added in split order on the host give y's bits exactly as the reduction
// kernel does. The prefill kernel's folded path (M × N tiles fill the card) writes y and reports 0.
TEST(MatmulGpu, LeftPartialsAddUpToTheOutputBitForBit) {
  REQUIRE_GPU();
  struct Case { const char* tag; int N, K; };
  for (const Case& s : {Case{"smollm2.o", 576, 576}, Case{"smollm2.down", 576, 1536}, Case{"llama1b.o", 2048, 2048},
                        Case{"odd.1000x999", 1000, 999}})
    for (int M : {1, 3, 17, 64, 300}) {
      if (gpu_test::emu_skips(double(M) * s.N * s.K)) continue;
      const std::vector<bf16_bits> x = random_bf16(size_t(M) * s.K, 5 + M), w = random_bf16(size_t(s.N) * s.K, 6);
      DeviceBuffer dx(x.size() * 2), dw(w.size() * 2), y(size_t(M) * s.N * 4),
          ws(std::max<size_t>(matmul_workspace_bytes(M, s.N, s.K, MatmulKernel::Auto), 16));
      dx.upload(x), dw.upload(w);
      MatmulParams p;
      p.M = M, p.N = s.N, p.K = s.K, p.x = dx.as<bf16_bits>(), p.ldx = s.K, p.w = dw.as<bf16_bits>(), p.ldw = s.K;
      p.out_type = MatmulOut::F32, p.y = y.as<void>(), p.ldy = s.N;
      p.workspace = ws.as<void>(), p.workspace_bytes = ws.bytes();
      std::string why;
      y.poison();
      ASSERT_EQ(matmul(p, nullptr, MatmulKernel::Auto, &why), cudaSuccess) << why;
      const std::vector<float> want = y.download<float>(size_t(M) * s.N);
      y.poison();
      p.leave_partials = true;
      int left = -1;
      ASSERT_EQ(matmul(p, nullptr, MatmulKernel::Auto, &why, &left), cudaSuccess) << why;
      CUDA_CHECK(cudaDeviceSynchronize());
      const std::string what = shape_name(s.tag, M, s.N, s.K);
      const int splits = matmul_num_splits(s.N, s.K);
      if (left == 0) {  // y written: K not split, or the splits folded in the prefill kernel
        EXPECT_TRUE(splits == 1 || (M > kDecodeMaxRows && matmul_pick(M) != MatmulKernel::Decode)) << what;
        expect_bits_equal("y (no partials left)", y.download<float>(want.size()), want, what);
        continue;
      }
      EXPECT_EQ(left, splits) << what;
      const std::vector<float> parts = ws.download<float>(size_t(left) * M * s.N), untouched = y.download<float>(want.size());
      std::vector<float> sum(want.size());
      for (size_t i = 0; i < sum.size(); ++i) {
        float acc = parts[i];
        for (int z = 1; z < left; ++z) acc = acc + parts[size_t(z) * sum.size() + i];
        sum[i] = acc;
      }
      expect_bits_equal("partials summed in split order", sum, want, what);
      EXPECT_TRUE(std::isnan(untouched[0]) && std::isnan(untouched.back())) << what << ": y written with leave_partials";
      std::printf("  %-44s %d partial sums left, their sum equals y bit for bit\n", what.c_str(), left);
    }
}

// The QKV projection's partials (rope_write_kv finishes them): added in split order, + bias, rounded to bf16, they
// are q, k and v of the Qkv epilogue bit for bit (Llama-3.2-1B's QKV: 6 splits at decode).
TEST(MatmulGpu, LeftQkvPartialsFinishToTheEpiloguesBits) {
  REQUIRE_GPU();
  const int N = 3072, K = 2048, num_q = 2048, num_kv = 512;
  for (int M : {1, 5, 64}) {
    if (gpu_test::emu_skips(double(M) * N * K)) continue;
    const std::vector<bf16_bits> x = random_bf16(size_t(M) * K, 40 + M), w = random_bf16(size_t(N) * K, 41),
                                 b = random_bf16(size_t(N), 42);
    DeviceBuffer dx(x.size() * 2), dw(w.size() * 2), db(b.size() * 2), q(size_t(M) * num_q * 2),
        k(size_t(M) * num_kv * 2), v(size_t(M) * num_kv * 2),
        ws(std::max<size_t>(matmul_workspace_bytes(M, N, K, MatmulKernel::Auto), 16));
    dx.upload(x), dw.upload(w), db.upload(b);
    q.poison(), k.poison(), v.poison();
    MatmulParams p;
    p.M = M, p.N = N, p.K = K, p.x = dx.as<bf16_bits>(), p.ldx = K, p.w = dw.as<bf16_bits>(), p.ldw = K;
    p.maybe_bias = db.as<bf16_bits>(), p.epilogue = MatmulEpilogue::Qkv, p.num_q = num_q, p.num_kv = num_kv;
    p.y = q.as<void>(), p.ldy = num_q, p.k_out = k.as<void>(), p.ld_k = num_kv, p.v_out = v.as<void>(), p.ld_v = num_kv;
    p.workspace = ws.as<void>(), p.workspace_bytes = ws.bytes();
    std::string why;
    ASSERT_EQ(matmul(p, nullptr, MatmulKernel::Auto, &why), cudaSuccess) << why;
    const std::vector<bf16_bits> wq = q.download<bf16_bits>(size_t(M) * num_q), wk = k.download<bf16_bits>(size_t(M) * num_kv),
                                 wv = v.download<bf16_bits>(size_t(M) * num_kv);
    p.leave_partials = true;
    int left = -1;
    ASSERT_EQ(matmul(p, nullptr, MatmulKernel::Auto, &why, &left), cudaSuccess) << why;
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::string what = shape_name("llama1b.qkv", M, N, K);
    ASSERT_EQ(left, matmul_num_splits(N, K)) << what;
    const std::vector<float> parts = ws.download<float>(size_t(left) * M * N);
    std::vector<float> got(size_t(M) * N), want(got.size());
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        float s = parts[size_t(m) * N + n];
        for (int z = 1; z < left; ++z) s = s + parts[size_t(z) * M * N + size_t(m) * N + n];
        got[size_t(m) * N + n] = to_f32(to_bf16(s + to_f32(b[size_t(n)])));
        want[size_t(m) * N + n] = to_f32(n < num_q ? wq[size_t(m) * num_q + n]
                                         : n < num_q + num_kv ? wk[size_t(m) * num_kv + n - num_q]
                                                              : wv[size_t(m) * num_kv + n - num_q - num_kv]);
      }
    expect_bits_equal("qkv partials finished on the host", got, want, what);
    std::printf("  %-44s %d partial sums left, finished they equal q, k, v bit for bit\n", what.c_str(), left);
  }
}

// The launcher's checks run before anything touches the GPU, so this runs everywhere.
// The L2 prefetch hint (MatmulParams::maybe_l2_prefetch, the next matmul's weights) changes no bit of the decode
// kernel's output: unsplit and split-K shapes, a region of 16 bytes (fewer units than the grid has blocks) and of
// several MiB. On the emulator the prefetch also checks its range (inside one allocation, 16-byte units).
TEST(MatmulGpu, L2PrefetchChangesNoBits) {
  REQUIRE_GPU();
  struct Case {
    int M, N, K;
    int64_t prefetch_bytes;
  };
  for (const Case c : {Case{1, 3072, 2048, int64_t(2048) * 2048 * 2}, Case{8, 2048, 8192, 16},
                       Case{3, 576, 1536, int64_t(576) * 576 * 2}}) {
    const std::string what = shape_name("l2_prefetch", c.M, c.N, c.K);
    const Problem pb(c.M, c.N, c.K, true, 4100 + uint32_t(c.N));
    DeviceBuffer next(size_t(c.prefetch_bytes));
    MatmulParams p = pb.base();
    p.out_type = MatmulOut::F32;
    const GpuOut plain = run_gpu(pb, p, MatmulKernel::Decode);
    p.maybe_l2_prefetch = next.as<void>(), p.l2_prefetch_bytes = c.prefetch_bytes;
    auto expect_same = [&](const GpuOut& hinted, const std::string& how) {
      ASSERT_EQ(hinted.y.size(), plain.y.size()) << what << how;
      size_t bad = 0;
      for (size_t i = 0; i < plain.y.size(); ++i) bad += std::memcmp(&hinted.y[i], &plain.y[i], 4) != 0;
      gpu_test::summary_add("l2_prefetch", bad ? INFINITY : 0.0, bad ? INFINITY : 0.0);
      EXPECT_EQ(bad, 0u) << what << how << ": " << bad << " of " << plain.y.size() << " outputs differ";
    };
    expect_same(run_gpu(pb, p, MatmulKernel::Decode), " with the next weights prefetched");
    // Each warp's own weights ahead (FLINT_MATMUL_AHEAD): all of them, a third (a share of every row's split that
    // does not end on a 16-byte unit), too few bytes for one unit. The emulator checks every prefetch's range.
    const int64_t weight_bytes = int64_t(c.N) * c.K * 2;
    for (const int64_t ahead : {weight_bytes, weight_bytes / 3 + 7, int64_t(16)}) {
      MatmulParams q = pb.base();
      q.out_type = MatmulOut::F32, q.l2_ahead_bytes = ahead;
      expect_same(run_gpu(pb, q, MatmulKernel::Decode), " with " + std::to_string(ahead) + " bytes ahead");
    }
  }
}

TEST(MatmulGpu, LauncherRejectsBadParamsWithAReason) {
  MatmulParams p;
  p.M = 65, p.N = 16, p.K = 32;
  p.x = reinterpret_cast<const bf16_bits*>(0x1000), p.ldx = 32, p.w = p.x, p.ldw = 32;
  p.y = reinterpret_cast<void*>(0x2000), p.ldy = 16;
  std::string why;
  EXPECT_EQ(matmul(p, nullptr, MatmulKernel::Decode, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("at most 64"), std::string::npos) << why;
  p.M = 129;
  EXPECT_EQ(matmul(p, nullptr, MatmulKernel::Mid, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("at most 128"), std::string::npos) << why;
  p.M = 65;
  p.M = 4, p.ldw = 16;
  EXPECT_EQ(matmul(p, nullptr, MatmulKernel::Prefill, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("ldw"), std::string::npos) << why;
  p.ldw = 32, p.K = 4096, p.N = 16;  // split K: a workspace is needed
  p.ldx = p.ldw = 4096;
  EXPECT_EQ(matmul(p, nullptr, MatmulKernel::Prefill, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("workspace"), std::string::npos) << why;
  EXPECT_EQ(matmul(p, nullptr, MatmulKernel::Cublas, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("workspace"), std::string::npos) << why;
  if (!matmul_wgmma_available()) {  // no Hopper here (or no sm_90a code): asking for the wgmma kernel is an error
    MatmulParams q = p;
    q.K = 32, q.ldx = q.ldw = 32;
    EXPECT_EQ(matmul(q, nullptr, MatmulKernel::PrefillWgmma, &why), cudaErrorInvalidValue);
    EXPECT_NE(why.find("compute capability 9"), std::string::npos) << why;
  }
  p.K = 32, p.ldx = p.ldw = 32, p.leave_partials = true;
  EXPECT_EQ(matmul(p, nullptr, MatmulKernel::Auto, &why, nullptr), cudaErrorInvalidValue);
  EXPECT_NE(why.find("partials_left"), std::string::npos) << why;
  int left = -1;
  p.epilogue = MatmulEpilogue::SiluMul;  // its consumer is a matmul, which cannot add partials
  EXPECT_EQ(matmul(p, nullptr, MatmulKernel::Auto, &why, &left), cudaErrorInvalidValue);
  EXPECT_NE(why.find("SiluMul"), std::string::npos) << why;
  EXPECT_EQ(left, 0);
  p.epilogue = MatmulEpilogue::None, p.leave_partials = false;
  p.l2_ahead_bytes = -1;
  EXPECT_EQ(matmul(p, nullptr, MatmulKernel::Decode, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("l2_ahead_bytes"), std::string::npos) << why;
  p.l2_ahead_bytes = 0;
  p.maybe_l2_prefetch = reinterpret_cast<const void*>(0x3004), p.l2_prefetch_bytes = 64;  // not 16-byte aligned
  EXPECT_EQ(matmul(p, nullptr, MatmulKernel::Decode, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("maybe_l2_prefetch"), std::string::npos) << why;
  p.maybe_l2_prefetch = reinterpret_cast<const void*>(0x3000), p.l2_prefetch_bytes = 40;  // not whole 16-byte units
  EXPECT_EQ(matmul(p, nullptr, MatmulKernel::Decode, &why), cudaErrorInvalidValue);
  EXPECT_NE(why.find("l2_prefetch_bytes"), std::string::npos) << why;
}

}  // namespace
}  // namespace flint::cuda
