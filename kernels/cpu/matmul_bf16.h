// The CPU twin of the CUDA bf16 matmul (kernels/cuda/matmul.h): the same MatmulParams, host pointers, the same
// reduction structure (K splits of matmul_split_len, each summed in fp32 in increasing k, then the splits in order)
// and the same epilogues. Its tests compare it with fp64; the GPU tests compare the kernels with it.
#pragma once
#include "kernels/matmul_params.h"

namespace flint::cpu {

// Computes p on the host (p.workspace is not used). Throws flint::Error naming the bad field when p is invalid.
// A row's result depends only on that row of x and on the weight: calling it on any slice of rows gives the same
// bits for those rows.
void matmul_bf16(const MatmulParams& p);

// Builds the gate+up weight matmul's SiluMul epilogue reads: gate (F, K) and up (F, K), rows ld apart, into
// out (2F, K) dense, interleaved by gate_up_row(). F must be a multiple of 8.
void interleave_gate_up(const bf16_bits* gate, const bf16_bits* up, int F, int K, int64_t ld, bf16_bits* out);

}  // namespace flint::cpu
