// MatmulParams: the one description of a bf16 matmul, read by the CUDA kernels (kernels/cuda/matmul.h) and by
// their CPU twin (kernels/cpu/matmul_bf16.h), so both compute from the same struct. No CUDA types here.
//
//   acc[m, n] = Σ_k x[m, k] · w[n, k]          x (M, K) rows ldx apart, w (N, K) rows ldw apart, bf16
//   None:    y[m, n] = acc[m, n] + bias[n]
//   Qkv:     the same, with columns [0, num_q) going to q, the next num_kv to k_out and the last num_kv to v_out
//   SiluMul: w holds gate and up rows interleaved in blocks of 8 (interleave_gate_up below):
//            y[m, f] = silu(acc[m, gate row of f] + bias) · (acc[m, up row of f] + bias), f < N / 2
//
// Reduction order (batch invariance): K is cut into matmul_num_splits(N, K) splits of matmul_split_len(N, K)
// values (a function of the weight's shape only, never of M). Inside a split, a row's products are accumulated in
// fp32 in increasing k, 32 values at a time as two dependent m16n8k16 tensor-core steps with the same operand
// layout in every kernel; the splits' partial sums are then added in split order. So a row's result depends on
// its own x row and the weight only, whatever M is and whichever kernel the dispatcher picks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#ifdef __CUDACC__
#define FLINT_HOST_DEVICE __host__ __device__
#else
#define FLINT_HOST_DEVICE
#endif

namespace flint {

using bf16_bits = uint16_t;  // a bfloat16 value's bits (the device code reads them as __nv_bfloat16)

enum class MatmulEpilogue : uint8_t { None, Qkv, SiluMul };
enum class MatmulOut : uint8_t { BF16, F32 };

struct MatmulParams {
  int M = 0, N = 0, K = 0;
  const bf16_bits* x = nullptr;  // (M, K), rows ldx elements apart
  int64_t ldx = 0;
  const bf16_bits* w = nullptr;  // (N, K), rows ldw elements apart
  int64_t ldw = 0;
  const bf16_bits* maybe_bias = nullptr;  // (N), in w's row order, or null
  MatmulEpilogue epilogue = MatmulEpilogue::None;
  MatmulOut out_type = MatmulOut::BF16;  // element type of y (and k_out, v_out)
  void* y = nullptr;  // None: (M, N); Qkv: q (M, num_q); SiluMul: (M, N / 2); rows ldy elements apart
  int64_t ldy = 0;
  // Qkv only: N = num_q + 2 * num_kv.
  int num_q = 0, num_kv = 0;
  void* k_out = nullptr;  // (M, num_kv), rows ld_k apart
  int64_t ld_k = 0;
  void* v_out = nullptr;  // (M, num_kv), rows ld_v apart
  int64_t ld_v = 0;
  // fp32 partial sums when K is split (matmul_workspace_bytes); device memory for the CUDA kernels.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // When the kernel leaves K's splits to a separate reduction, skip it: y (k_out, v_out) is not written, and the S
  // partial sums stay in the workspace, split s at workspace + s · M · N (rows N apart), for the consumer to add in
  // split order and to finish as the epilogue would (bias, Qkv routing, rounding to out_type): add_rmsnorm's
  // delta_splits (epilogue None, no bias, fp32) and rope_write_kv's qkv partials (Qkv). One launch fewer. The
  // launcher reports S (0: y written as usual). Not for SiluMul. The CPU twin always writes y.
  bool leave_partials = false;
  // A hint that changes no result: device memory the decode kernel (M <= 64) asks L2 to fetch while it runs, split
  // over its blocks (sm_90's bulk prefetch) - the next matmul's weights, so that a small matrix after this one reads
  // from L2 instead of waiting on HBM. Memory nothing writes during the step (launch.cuh's weights-first rule):
  // prefetched before the kernel's pdl_begin. 16-byte aligned; l2_prefetch_bytes a multiple of 16. The other
  // kernels and the CPU twin ignore it.
  const void* maybe_l2_prefetch = nullptr;
  int64_t l2_prefetch_bytes = 0;
  // A hint that changes no result: at M <= 16 (the decode kernel's weights-first loads, launch.cuh) each warp also
  // asks L2 for the start of the rest of its own weights before pdl_begin, l2_ahead_bytes over the whole weight
  // (the same share of every row's split), so that under PDL the weights stream while the kernel before runs.
  // 0: none. The CUDA dispatcher sets it from FLINT_MATMUL_AHEAD when the caller left it 0 (kernels/cuda/matmul.h).
  int64_t l2_ahead_bytes = 0;
};

// K values per 32-wide step of the kernels; splits are whole steps.
constexpr int kMatmulKStep = 32;

// The (row group of 16) × split pairs a split weight aims for: 1024, or FLINT_MATMUL_TARGET_WARPS (64 to 65536)
// for measuring other values. Read once per process, so the CPU twin and every kernel of the process cut K the
// same way and a row's bits still do not depend on M; bits do change with the value.
inline int matmul_target_warps() {
  static const int warps = [] {
    const char* v = std::getenv("FLINT_MATMUL_TARGET_WARPS");
    const long n = v ? std::strtol(v, nullptr, 10) : 0;
    return n >= 64 && n <= 65536 ? int(n) : 1024;
  }();
  return warps;
}

// How many splits K is cut into for a weight of N rows and K columns: enough (row group of 16) × split pairs to keep
// matmul_target_warps() warps reading when N is small, each split at least 256 values long. A function of (N, K)
// only.
inline int matmul_num_splits(int N, int K) {
  const int row_groups = (N + 15) / 16;
  const int steps = (K + kMatmulKStep - 1) / kMatmulKStep;
  const int max_by_k = steps / 8;  // at least 8 steps (256 values) per split
  const int target = matmul_target_warps();
  int s = (target + row_groups - 1) / row_groups;
  if (s > max_by_k) s = max_by_k;
  if (s < 1) s = 1;
  const int steps_per_split = (steps + s - 1) / s;
  return (steps + steps_per_split - 1) / steps_per_split;  // no empty split
}
// Values of K per split (a multiple of kMatmulKStep; the last split may be shorter).
inline int matmul_split_len(int N, int K) {
  const int steps = (K + kMatmulKStep - 1) / kMatmulKStep;
  const int s = matmul_num_splits(N, K);
  return (steps + s - 1) / s * kMatmulKStep;
}

// Workspace the kernels need: S × M × N fp32 partial sums when K is split (S > 1), else none.
inline size_t matmul_workspace_bytes(int M, int N, int K) {
  const int s = matmul_num_splits(N, K);
  return s > 1 ? size_t(s) * size_t(M) * size_t(N) * sizeof(float) : 0;
}

// Row r of a gate+up weight as matmul stores it: blocks of 16 rows, the first 8 gate rows 8j..8j+7, then up rows
// 8j..8j+7, so the tensor-core fragment that holds row g of a block also holds row g + 8 (its partner).
FLINT_HOST_DEVICE inline int gate_up_row(int f, bool up) { return (f / 8) * 16 + (up ? 8 : 0) + f % 8; }

// Empty when p describes a valid call; else what is wrong, naming the field. Checks shapes, strides, pointers and
// (when check_workspace) the workspace size; not that pointers point to memory of the right kind.
inline std::string matmul_params_error(const MatmulParams& p, bool check_workspace = true) {
  auto str = [](const char* what, long long v) { return std::string(what) + " = " + std::to_string(v); };
  if (p.M < 1 || p.N < 1 || p.K < 1)
    return "matmul: M, N, K must be >= 1 (got M=" + std::to_string(p.M) + ", N=" + std::to_string(p.N) +
           ", K=" + std::to_string(p.K) + ")";
  if (!p.x || !p.w) return "matmul: x and w must not be null";
  if (p.ldx < p.K) return "matmul: " + str("ldx", p.ldx) + " is less than K = " + std::to_string(p.K);
  if (p.ldw < p.K) return "matmul: " + str("ldw", p.ldw) + " is less than K = " + std::to_string(p.K);
  if (!p.y) return "matmul: y must not be null";
  switch (p.epilogue) {
    case MatmulEpilogue::None:
      if (p.ldy < p.N) return "matmul: " + str("ldy", p.ldy) + " is less than N = " + std::to_string(p.N);
      break;
    case MatmulEpilogue::Qkv:
      if (p.num_q < 1 || p.num_kv < 1 || p.num_q + 2 * p.num_kv != p.N)
        return "matmul qkv: need num_q + 2 * num_kv == N with both >= 1 (got num_q=" + std::to_string(p.num_q) +
               ", num_kv=" + std::to_string(p.num_kv) + ", N=" + std::to_string(p.N) + ")";
      if (!p.k_out || !p.v_out) return "matmul qkv: k_out and v_out must not be null";
      if (p.ldy < p.num_q || p.ld_k < p.num_kv || p.ld_v < p.num_kv)
        return "matmul qkv: ldy >= num_q, ld_k >= num_kv and ld_v >= num_kv needed";
      break;
    case MatmulEpilogue::SiluMul:
      if (p.N % 16 != 0) return "matmul silu_mul: N (gate + up rows) must be a multiple of 16, got " + std::to_string(p.N);
      if (p.ldy < p.N / 2) return "matmul silu_mul: " + str("ldy", p.ldy) + " is less than N / 2";
      break;
    default:
      return "matmul: unknown epilogue " + std::to_string(int(p.epilogue)) + " (supported: None, Qkv, SiluMul)";
  }
  if (p.out_type != MatmulOut::BF16 && p.out_type != MatmulOut::F32)
    return "matmul: unknown out_type " + std::to_string(int(p.out_type)) + " (supported: BF16, F32)";
  if (p.leave_partials && p.epilogue == MatmulEpilogue::SiluMul)
    return "matmul: leave_partials is for epilogues None and Qkv (SiluMul's consumer is another matmul)";
  if (p.maybe_l2_prefetch && (reinterpret_cast<uintptr_t>(p.maybe_l2_prefetch) % 16 != 0 || p.l2_prefetch_bytes < 16 ||
                              p.l2_prefetch_bytes % 16 != 0))
    return "matmul: maybe_l2_prefetch must be 16-byte aligned and l2_prefetch_bytes a positive multiple of 16 (got " +
           std::to_string(p.l2_prefetch_bytes) + ")";
  if (p.l2_ahead_bytes < 0) return "matmul: l2_ahead_bytes is " + std::to_string(p.l2_ahead_bytes) + " (0: none)";
  const size_t need = check_workspace ? matmul_workspace_bytes(p.M, p.N, p.K) : 0;
  if (need && (!p.workspace || p.workspace_bytes < need))
    return "matmul: K = " + std::to_string(p.K) + " is split " + std::to_string(matmul_num_splits(p.N, p.K)) +
           " ways for N = " + std::to_string(p.N) + ": workspace of " + std::to_string(need) + " bytes needed, got " +
           std::to_string(p.workspace ? p.workspace_bytes : 0);
  return {};
}

}  // namespace flint
