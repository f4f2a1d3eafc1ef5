// What the emulator's two halves share: runtime.cpp (the API, streams, graphs, memory) calls scheduler.cpp to run
// one block of a kernel.
#pragma once
#include <functional>
#include <string>

#include "tests/cuda_emu/cuda_emu.h"

namespace cuda_emu {
// Runs every thread of one block to its end. False on a device fault (a deadlock, a collective misused, a
// misaligned ldmatrix or cp.async): `fault` says what, `fault_thread` which thread saw it.
bool run_block(const dim3& grid, const dim3& block, const uint3& block_idx, const std::function<void()>& body,
               void* dynamic_smem, std::string* fault, uint3* fault_thread);
int max_threads_per_block();
// Whether [p, p + n) lies inside one device allocation (runtime.cpp).
bool device_range(const void* p, size_t n);
}  // namespace cuda_emu
