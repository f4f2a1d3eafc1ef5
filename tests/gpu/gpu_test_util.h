// What every GPU test file shares: REQUIRE_GPU (skip without a GPU, fail under FLINT_REQUIRE_GPU), DeviceBuffer,
// and the one "## summary" block of flint_gpu_tests: each file adds its worst error per kernel, and one printer
// prints them all after the last test (scripts/gpu-check.sh repeats the last "## summary" block of a step's log,
// so two files each printing their own block would hide one of them).
#pragma once
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "tests/gpu/require_gpu.h"

namespace flint::gpu_test {


// The CUDA emulator (tests/cuda_emu) runs a kernel some thousand times slower than a device, so there a test skips
// the cases whose work (multiply-adds) is over emu_work_bound(): FLINT_CUDA_EMU_MAX_WORK, default 3e8, about a
// second each. The summary says how many it skipped. On a device every case runs.
#ifdef FLINT_CUDA_EMU
inline constexpr bool kEmulated = true;
#else
inline constexpr bool kEmulated = false;
#endif
inline double emu_work_bound() {
  static const double bound = [] {
    const char* e = std::getenv("FLINT_CUDA_EMU_MAX_WORK");
    return e && *e ? std::atof(e) : 3e8;
  }();
  return bound;
}
inline int& emu_skipped() {
  static int n = 0;
  return n;
}
// True (and counted) when the emulator should skip a case of this much work.
inline bool emu_skips(double work) {
  if (!kEmulated || work <= emu_work_bound()) return false;
  ++emu_skipped();
  return true;
}

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes_) CUDA_CHECK(cudaMalloc(&p_, bytes_));
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(p_); }
  template <class T>
  void upload(const std::vector<T>& v) { CUDA_CHECK(cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice)); }
  template <class T>
  std::vector<T> download(size_t n) const {
    std::vector<T> v(n);
    CUDA_CHECK(cudaMemcpy(v.data(), p_, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  void poison() {
    if (bytes_) CUDA_CHECK(cudaMemset(p_, 0xFF, bytes_));
  }  // 0xFFFF / 0xFFFFFFFF: NaN in bf16 and fp32
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

struct SummaryEntry {
  double max_ratio = 0, max_abs = 0;  // worst |err| / tolerance (must be <= 1), worst |err|
  int cases = 0;
};

inline std::map<std::string, SummaryEntry>& summary_entries() {
  static std::map<std::string, SummaryEntry> entries;
  return entries;
}

// One compared case of `kernel`: ratio = worst |err| / tolerance over its elements (0 when bit-exact is asked
// and met; infinity for a NaN or a mismatch where equal bits are asked).
inline void summary_add(const std::string& kernel, double ratio, double abs_err) {
  SummaryEntry& e = summary_entries()[kernel];
  e.max_ratio = std::max(e.max_ratio, ratio);
  e.max_abs = std::max(e.max_abs, abs_err);
  ++e.cases;
}

class SummaryPrinter : public ::testing::Environment {
 public:
  void TearDown() override {
    std::printf("\n## summary flint_gpu_tests (kernels vs CPU twins; ratio = worst |err| / tolerance, must be <= 1)\n");
    if (summary_entries().empty()) std::printf("no kernel ran (no GPU?)\n");
    if (emu_skipped())
      std::printf("(CUDA emulator: %d cases over its work bound of %.3g multiply-adds skipped; a device runs them all)\n",
                  emu_skipped(), emu_work_bound());
    for (const auto& [kernel, e] : summary_entries())
      std::printf("%-16s %4d cases  worst ratio %.3f  worst |err| %.3g  %s\n", kernel.c_str(), e.cases, e.max_ratio,
                  e.max_abs, e.max_ratio <= 1 ? "PASS" : "FAIL");
  }
};
// Registered once for the whole binary (an inline variable is initialised once, whichever files include this).
inline const auto* const kSummaryPrinter = ::testing::AddGlobalTestEnvironment(new SummaryPrinter);

}  // namespace flint::gpu_test
