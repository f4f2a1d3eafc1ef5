// The bf16 matmul on the GPU: y = x · wᵀ with the epilogues and the reduction order kernels/matmul_params.h
// defines. Two kernels and a dispatcher:
//   Decode  (M <= 64): every warp owns 16 weight rows and all M tokens, so each weight byte is read once per call,
//           straight from global memory into tensor-core fragments with 16-byte loads, 4 to 8 32-value steps
//           (128 to 256 bytes) in flight per lane; K is split (matmul_num_splits) when N alone gives too few warps.
//           For M <= 16 its first weight loads are issued before it waits for the kernel before it (PDL,
//           launch.cuh): w must not be written by a kernel of the same step. With maybe_l2_prefetch set its blocks
//           also ask L2 for the next matmul's weights, before that wait (a hint: no result changes); with
//           l2_ahead_bytes (FLINT_MATMUL_AHEAD=on|MiB, off by default; not yet measured on a device) each warp asks
//           L2 for the start of the rest of its own weights there too.
//   Prefill (any M, picked for M > 64): 128 weight rows × 128 tokens per block, 32-value k steps through shared
//           memory in a 4-stage cp.async pipeline, the same fragments and the same mma chain per output. When K is
//           split and the M × N tiles alone fill the card, a block runs every split itself and adds the splits'
//           sums in registers (the same additions, in the same order, as the reduction kernel), so no partial
//           sums go through memory.
//   PrefillWgmma (Hopper, sm_90a; picked there for M > 64): Prefill's tiles, splits and fold with the tensor-core
//           steps as wgmma m64n128k16 (weights from registers, tokens from shared memory placed in the m16n8k16
//           steps' k order). Shapes without 16-byte loads run Prefill. FLINT_MATMUL=wgmma64 runs it on 64-row
//           weight tiles (one warpgroup a block, two blocks an SM): the same bits, twice the blocks.
//   Mid     (M <= 128; picked only under FLINT_MATMUL=mid, for 16 < M <= 128): Decode's warps (8 a block) with the
//           tokens staged in shared memory, each 128-value chunk of x copied once per block by cp.async instead of
//           once per warp; 16-byte loads only (other shapes run Decode or Prefill).
//   Cublas: cuBLASLt into fp32, then the same epilogue: the measured baseline, and a fallback. It does NOT keep a
//           row's bits independent of M (cuBLASLt picks its algorithm by shape).
// Decode and Prefill run the same arithmetic for every output (same split, same two m16n8k16 steps per 32 values
// with the same operand layout, same partial-sum order, same epilogue code), so the dispatcher may switch between
// them at any M without changing a row's bits; the GPU tests check this bit for bit. What this rests on: an mma's
// result for one output depends only on that output's accumulator, weight row and token column (the
// instruction's definition), and the tensor core computes it the same way every time.
#pragma once
#include <cuda_runtime_api.h>

#include <string>

#include "kernels/matmul_params.h"

namespace flint::cuda {

enum class MatmulKernel : uint8_t { Auto, Decode, Prefill, PrefillWgmma, Cublas, Mid };
const char* matmul_kernel_name(MatmulKernel k);

// Whether PrefillWgmma can run: the build has sm_90a code (CMake's default target) and the current device (at the
// first call) has compute capability 9.x.
bool matmul_wgmma_available();

constexpr int kDecodeMaxRows = 64;  // the decode kernel keeps all M tokens in every warp's registers
constexpr int kDecodeWeightsFirstRows = 16;  // up to here it loads its first weights before the PDL wait
constexpr int kMidMaxRows = 128;    // the mid kernel's tokens: all of them staged in shared memory

// What Auto runs for M rows: Cublas when the environment has FLINT_MATMUL=cublas (read once), else Decode for
// M <= kDecodeMaxRows and above it PrefillWgmma on Hopper (Prefill elsewhere), or Cublas with FLINT_MATMUL=hybrid (Flint's decode kernel for decode
// steps, cuBLASLt for prefill and large batches: faster there today, but a row's bits then depend on M).
// FLINT_MATMUL=mma keeps Prefill (mma.sync) on Hopper too; FLINT_MATMUL=wgmma64 picks as the default does;
// FLINT_MATMUL=mid picks Mid for 16 < M <= kMidMaxRows (not yet measured on a device);
// FLINT_MATMUL=flint (or unset) is the default. FLINT_MATMUL_AHEAD (off, on = half of L2, or MiB) is the
// l2_ahead_bytes matmul() gives a Decode call of M <= kDecodeWeightsFirstRows that left it 0.
MatmulKernel matmul_pick(int M);

// Workspace `kernel` needs for this shape (Auto: what the kernel matmul_pick chooses needs, FLINT_MATMUL
// included; ours grows with M, so sizing at the largest M covers every call with fewer rows).
size_t matmul_workspace_bytes(int M, int N, int K, MatmulKernel kernel);

// Queues the matmul on `stream`. p's pointers are device pointers (workspace included). Checks p once: an invalid
// p, a kernel that cannot take it (Decode with M > 64) or a bad FLINT_MATMUL returns cudaErrorInvalidValue and,
// when `error` is given, says why; otherwise returns the launch's error (cudaGetLastError after each launch).
// 16-byte loads need x, w 16-byte aligned and K, ldx, ldw multiples of 8; other shapes run a slower path that
// loads element by element with the same arithmetic.
// p.leave_partials: *partials_left (required then) is set to the number of partial sums left in the workspace in
// place of y, or 0 when y was written (K not split, the splits folded in the prefill kernel, or cuBLASLt).
cudaError_t matmul(const MatmulParams& p, cudaStream_t stream, MatmulKernel kernel = MatmulKernel::Auto,
                   std::string* error = nullptr, int* partials_left = nullptr);

}  // namespace flint::cuda
