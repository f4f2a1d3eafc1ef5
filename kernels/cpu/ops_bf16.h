// The CPU twins of the small CUDA ops (kernels/cuda/ops.h): the same param structs (kernels/ops_params.h) with
// host pointers and the same arithmetic per element. Their unit tests compare them with a plain fp32/fp64
// reference; the GPU tests compare the kernels with them.
#pragma once
#include "kernels/ops_params.h"

namespace flint::cpu {

// Each throws flint::Error naming the bad field when p is invalid (the *_params_error message).
void embedding_bf16(const EmbeddingParams& p);
// Σx² is summed in fp32 in the kernel's order (thread t of 256 takes values 8·(t + 256·j) .. +7, then the warp
// shuffle tree), and inv_rms = 1 / sqrt(Σx² / hidden + eps) rounds each step as the kernel does: equal bits.
void add_rmsnorm(const AddRmsNormParams& p);
// f32_to_bf16(dequantize_row(...)) row by row: the definition the GPU kernel matches bit for bit.
void dequantize_bf16(const DequantParams& p);

}  // namespace flint::cpu
