// The matmul dispatcher (matmul.h): it checks a call, picks the kernel (matmul_decode.cu, matmul_prefill.cu) or
// cuBLASLt, and runs the split-K reduction and epilogue. See matmul.h for the design and kernels/matmul_params.h for
// the reduction order every kernel shares.
#include "kernels/cuda/matmul.h"

#include <cublasLt.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "kernels/cuda/l2_budget.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/matmul_common.cuh"
#include "kernels/cuda/matmul_kernels.h"

namespace flint::cuda {

int mm::multiprocessor_count() {  // of the device current at the first call
  static const int sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      return 132;
    return n;
  }();
  return sms;
}

namespace {

using namespace mm;

// Sums the splits' partials in split order (0, then += 1, 2, ...) and runs the epilogue; one thread per output.
// Also the epilogue of the cuBLASLt path (one "split": its fp32 result).
__global__ void reduce_splits(const MatmulParams p, int num_splits) {
  pdl_begin();
  const int cols = p.epilogue == MatmulEpilogue::SiluMul ? p.N / 2 : p.N;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(p.M) * cols) return;
  const int m = int(i / cols), col = int(i % cols);
  const float* ws = static_cast<const float*>(p.workspace);
  const size_t split_stride = size_t(p.M) * p.N;
  auto sum = [&](int n) {
    float s = ws[size_t(m) * p.N + n];
    for (int z = 1; z < num_splits; ++z) s = s + ws[z * split_stride + size_t(m) * p.N + n];
    return s;
  };
  if (p.epilogue == MatmulEpilogue::SiluMul) store_silu_mul(p, m, col, sum(gate_up_row(col, false)), sum(gate_up_row(col, true)));
  else store_column(p, m, col, sum(col));
}

// ---- Host side.

bool vector_loads_ok(const MatmulParams& p) {
  auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  return aligned(p.x) && aligned(p.w) && p.K % 8 == 0 && p.ldx % 8 == 0 && p.ldw % 8 == 0;
}

bool compute_capability_9() {  // of the device current at the first call: Hopper, where the wgmma kernel runs
  static const bool hopper = [] {
    int dev = 0, major = 0;
    return cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major == 9;
  }();
  return hopper;
}


cudaError_t launch_reduce(const MatmulParams& p, int num_splits, cudaStream_t stream) {
  const int64_t outputs = int64_t(p.M) * (p.epilogue == MatmulEpilogue::SiluMul ? p.N / 2 : p.N);
  return launch_kernel(reduce_splits, dim3(unsigned((outputs + 255) / 256)), dim3(256), 0, stream, p, num_splits);
}

// cuBLASLt: one handle for the process, made on first use (cublasLtCreate is not free; the handle is not tied to a
// stream). fp32 out into the workspace, then reduce_splits with one "split" runs the epilogue.
cudaError_t launch_cublas(const MatmulParams& p, cudaStream_t stream, std::string* error) {
  static std::once_flag once;
  static cublasLtHandle_t handle = nullptr;
  static cublasStatus_t create_status = CUBLAS_STATUS_SUCCESS;
  std::call_once(once, [] { create_status = cublasLtCreate(&handle); });
  auto fail = [&](const char* what, cublasStatus_t s) {
    if (error) *error = std::string("cuBLASLt ") + what + ": " + cublasLtGetStatusName(s);
    return cudaErrorUnknown;
  };
  if (create_status != CUBLAS_STATUS_SUCCESS) return fail("create", create_status);
  // Column-major view: yᵀ (N × M, fp32) = op_T(w viewed K × N, ld ldw) · (x viewed K × M, ld ldx).
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasStatus_t s = cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t));
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n));
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, p.K, p.N, p.ldw);
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, p.K, p.M, p.ldx);
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, p.N, p.M, p.N);
  if (s == CUBLAS_STATUS_SUCCESS) {
    const float alpha = 1.0f, beta = 0.0f;
    s = cublasLtMatmul(handle, desc, &alpha, p.w, a, p.x, b, &beta, p.workspace, c, p.workspace, c, nullptr, nullptr,
                       0, stream);
  }
  if (c) cublasLtMatrixLayoutDestroy(c);
  if (b) cublasLtMatrixLayoutDestroy(b);
  if (a) cublasLtMatrixLayoutDestroy(a);
  if (desc) cublasLtMatmulDescDestroy(desc);
  if (s != CUBLAS_STATUS_SUCCESS) return fail("matmul", s);
  return launch_reduce(p, 1, stream);
}

struct EnvChoice {
  bool valid = true, cublas = false, hybrid = false, mma = false, wgmma64 = false, mid = false;
  std::string value;
};
const EnvChoice& env_choice() {
  static const EnvChoice choice = [] {
    EnvChoice c;
    const char* v = std::getenv("FLINT_MATMUL");
    c.value = v ? v : "";
    if (c.value == "cublas") c.cublas = true;
    else if (c.value == "hybrid") c.hybrid = true;
    else if (c.value == "mma") c.mma = true;
    else if (c.value == "wgmma64") c.wgmma64 = true;
    else if (c.value == "mid") c.mid = true;
    else if (!c.value.empty() && c.value != "flint") c.valid = false;
    return c;
  }();
  return choice;
}

// FLINT_MATMUL_AHEAD (read once): the l2_ahead_bytes the dispatcher gives decode calls of M <= 16 whose caller left
// it 0. Unset, "off" or "0": none; "on": half the L2 of the device current at the first call; N: N MiB (1..4096).
const EnvL2Budget& ahead_choice() {
  static const EnvL2Budget choice = env_l2_budget("FLINT_MATMUL_AHEAD");
  return choice;
}

}  // namespace

const char* matmul_kernel_name(MatmulKernel k) {
  switch (k) {
    case MatmulKernel::Auto: return "auto";
    case MatmulKernel::Decode: return "decode";
    case MatmulKernel::Prefill: return "prefill";
    case MatmulKernel::PrefillWgmma: return "prefill_wgmma";
    case MatmulKernel::Mid: return "mid";
    case MatmulKernel::Cublas: return "cublas";
  }
  return "?";
}

// FLINT_WGMMA_BUILT: CMake's word that sm_90a code was built (the emulator runs wgmma too); else the kernel is a
// trap on every device.
#if defined(FLINT_WGMMA_BUILT) || defined(FLINT_CUDA_EMU)
bool matmul_wgmma_available() { return compute_capability_9(); }
#else
bool matmul_wgmma_available() { return false; }
#endif

MatmulKernel matmul_pick(int M) {
  if (env_choice().cublas) return MatmulKernel::Cublas;
  if (env_choice().mid && M > 16 && M <= kMidMaxRows) return MatmulKernel::Mid;
  if (M <= kDecodeMaxRows) return MatmulKernel::Decode;
  if (env_choice().hybrid) return MatmulKernel::Cublas;
  return matmul_wgmma_available() && !env_choice().mma ? MatmulKernel::PrefillWgmma : MatmulKernel::Prefill;
}

size_t matmul_workspace_bytes(int M, int N, int K, MatmulKernel kernel) {
  const size_t ours = flint::matmul_workspace_bytes(M, N, K), cublas = size_t(M) * size_t(N) * sizeof(float);
  switch (kernel) {
    case MatmulKernel::Decode:
    case MatmulKernel::Mid:
    case MatmulKernel::Prefill:
    case MatmulKernel::PrefillWgmma: return ours;
    case MatmulKernel::Cublas: return cublas;
    case MatmulKernel::Auto: break;
  }
  // Auto runs what matmul_pick says, and only FLINT_MATMUL=cublas or hybrid (read once per process) picks cuBLAS:
  // the M × N fp32 buffer cuBLAS needs is not reserved otherwise (about 310 MB for Qwen2.5-7B's gate+up at 2048
  // tokens). Ours grows with M (the splits depend on the weight's shape only), so the largest M covers every
  // smaller one; hybrid runs ours only up to kDecodeMaxRows rows.
  if (env_choice().cublas) return cublas;
  if (env_choice().hybrid)
    return std::max(flint::matmul_workspace_bytes(std::min(M, kDecodeMaxRows), N, K), M > kDecodeMaxRows ? cublas : 0);
  return ours;
}

cudaError_t matmul(const MatmulParams& p, cudaStream_t stream, MatmulKernel kernel, std::string* error,
                   int* partials_left) {
  auto invalid = [&](std::string why) {
    if (error) *error = std::move(why);
    return cudaErrorInvalidValue;
  };
  if (partials_left) *partials_left = 0;
  if (p.leave_partials && !partials_left) return invalid("matmul: leave_partials needs partials_left (how many)");
  if (!env_choice().valid)
    return invalid("FLINT_MATMUL=" + env_choice().value +
                   ": expected 'flint' (the default), 'mma', 'wgmma64', 'mid', 'hybrid' or 'cublas'");
  if (!ahead_choice().valid)
    return invalid(ahead_choice().why("FLINT_MATMUL_AHEAD"));
  if (kernel == MatmulKernel::Auto) kernel = matmul_pick(p.M);
  if (std::string e = matmul_params_error(p, kernel != MatmulKernel::Cublas); !e.empty()) return invalid(e);
  if (kernel == MatmulKernel::Cublas) {
    const size_t need = matmul_workspace_bytes(p.M, p.N, p.K, MatmulKernel::Cublas);
    if (!p.workspace || p.workspace_bytes < need)
      return invalid("matmul (cublas): workspace of " + std::to_string(need) + " bytes needed (fp32 M x N), got " +
                     std::to_string(p.workspace ? p.workspace_bytes : 0));
    return launch_cublas(p, stream, error);
  }
  if (kernel == MatmulKernel::PrefillWgmma && !matmul_wgmma_available())
    return invalid("matmul (prefill_wgmma): needs a device of compute capability 9.x (Hopper)");
  if (kernel == MatmulKernel::Decode && p.M > kDecodeMaxRows)
    return invalid("matmul (decode): M = " + std::to_string(p.M) + " rows, the decode kernel takes at most " +
                   std::to_string(kDecodeMaxRows));
  if (kernel == MatmulKernel::Mid && p.M > kMidMaxRows)
    return invalid("matmul (mid): M = " + std::to_string(p.M) + " rows, the mid kernel takes at most " +
                   std::to_string(kMidMaxRows));
  const int num_splits = matmul_num_splits(p.N, p.K), split_len = matmul_split_len(p.N, p.K);
  const bool vec = vector_loads_ok(p);
  cudaError_t e;
  bool folded = false;
  if (kernel == MatmulKernel::Mid && !vec)  // no 16-byte loads: the decode kernel (M <= 64) or Prefill, same bits
    kernel = p.M <= kDecodeMaxRows ? MatmulKernel::Decode : MatmulKernel::Prefill;
  if (kernel == MatmulKernel::Mid)
    e = launch_mid(p, split_len, num_splits, stream);
  else if (kernel == MatmulKernel::Decode) {
    MatmulParams q = p;  // FLINT_MATMUL_AHEAD's budget for the weights-first rows, unless the caller gave one
    if (q.M <= kDecodeWeightsFirstRows && q.l2_ahead_bytes == 0) q.l2_ahead_bytes = ahead_choice().bytes;
    e = launch_decode(q, vec, split_len, num_splits, stream);
  } else if (kernel == MatmulKernel::PrefillWgmma && vec)
    e = launch_prefill_wgmma(p, env_choice().wgmma64 ? 1 : 2, split_len, num_splits, stream, &folded);
  else  // Prefill, or PrefillWgmma on a shape without 16-byte loads: the mma.sync kernel, the same bits
    e = launch_prefill(p, vec, split_len, num_splits, stream, &folded);
  if (e != cudaSuccess || num_splits == 1 || folded) return e;
  if (p.leave_partials) {
    *partials_left = num_splits;
    return e;
  }
  return launch_reduce(p, num_splits, stream);
}

}  // namespace flint::cuda

