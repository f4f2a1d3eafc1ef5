// The small GPU ops of the CUDA backend besides matmul and attention: embedding, the residual add fused with
// RMSNorm, the gather of the rows that sample, and dequantisation of GGUF weights to bf16 at load. Their semantics
// and parameter structs are in kernels/ops_params.h; the CPU twins (same structs, host pointers) in
// kernels/cpu/ops_bf16.h. Sampling is in kernels/cuda/sampling.h.
//
// Every launcher checks its params once: an invalid struct returns cudaErrorInvalidValue and, when `error` is
// given, says why (naming the field); otherwise it queues the kernel on `stream` and returns the launch's error
// (cudaGetLastError). Zero rows queue nothing and return cudaSuccess. Launchers never exit.
#pragma once
#include <cuda_runtime_api.h>

#include <string>

#include "kernels/ops_params.h"

namespace flint::cuda {

// One block of 128 threads per token row; 16-byte copies when hidden, ld_table, ld_out are multiples of 8 and the pointers are
// 16-byte aligned, else element by element.
cudaError_t embedding(const EmbeddingParams& p, cudaStream_t stream, std::string* error = nullptr);

// One block per row (256 threads), two passes over the row: x (+= delta, written back) and Σx² in fp32, a
// block-wide sum, then out = bf16(x · inv_rms · w) re-reading x (the row is in L1/L2 by then). With row ids a
// block reads its row's x and delta (x not written; pass 2 adds the delta again, the same additions). 16-byte loads of
// x, delta, w and stores of out when hidden and the leading dimensions are multiples of 8 and the pointers 16-byte
// aligned; else element by element. Any hidden (8192 is 4 chunks of 8 values per thread).
cudaError_t add_rmsnorm(const AddRmsNormParams& p, cudaStream_t stream, std::string* error = nullptr);

// One thread per 32-value block (Q4_0, Q4_1, Q8_0), per 32 values of a 256-value super-block (Q4_K, Q6_K), or
// per value (F32, F16, BF16). Bit-for-bit equal to f32_to_bf16 ∘ cpu::dequantize_row (see DequantParams).
cudaError_t dequantize(const DequantParams& p, cudaStream_t stream, std::string* error = nullptr);

// Holds `stream` until *flag (device-visible, e.g. mapped pinned memory) becomes nonzero, or for about 2 s at
// most: one thread spinning, so that what is queued behind it runs back to back once the host has queued it all
// (the op profiler, model/cuda_op_profiler.h). The CUDA emulator runs each launch at once, so there it holds
// nothing and returns cudaSuccess.
cudaError_t hold_stream(const int32_t* flag, cudaStream_t stream);

}  // namespace flint::cuda
