// The CUDA emulator: runs Flint's CUDA kernels, their launchers and the CUDA backend on the CPU, so the kernels'
// indexing, fragment layouts, barriers, cp.async pipelines and graph capture are exercised on a machine without a
// GPU (tests/cuda_emu/README.md says what it checks and what it cannot).
//
// A translated .cu (scripts/cuda-emu-translate.py) is compiled by the host compiler with tests/cuda_emu/include
// ahead of the system's include path, so <cuda_runtime.h>, <cuda_bf16.h> and <cublasLt.h> are the emulator's.
// Each block runs alone; its threads are fibers on the calling thread, switched only at __syncthreads and the warp
// collectives (shuffles, mma, ldmatrix), so plain C++ statics serve as __shared__ memory.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- Qualifiers.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static  // one block at a time: a function's statics are its block's shared memory
#define __align__(n) __attribute__((aligned(n)))

// ---- Vector types.
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct uint3 {
  unsigned x, y, z;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
constexpr int warpSize = 32;

// ---- The runtime API (cuda_emu.cpp).
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchTimeout = 702,
  cudaErrorHardwareStackError = 714,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorInvalidAddressSpace = 717,
  cudaErrorInvalidPc = 718,
  cudaErrorLaunchFailure = 719,
  cudaErrorAssert = 710,
  cudaErrorECCUncorrectable = 214,
  cudaErrorContextIsDestroyed = 709,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureUnmatched = 903,
  cudaErrorStreamCaptureWrongThread = 908,
  cudaErrorNoDevice = 100,
  cudaErrorNotSupported = 801,
  cudaErrorUnknown = 999,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrL2CacheSize = 38,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2,
};
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
constexpr unsigned cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
constexpr unsigned cudaHostAllocDefault = 0, cudaHostAllocMapped = 2;
constexpr unsigned cudaEventDefault = 0;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  int multiProcessorCount;
  int major, minor;
  int maxThreadsPerBlock;
  int warpSize;
  int memoryBusWidth;
  int memoryClockRate;
  int clockRate;
  size_t l2CacheSize;
};

namespace cuda_emu {
struct Stream;
struct Graph;
struct GraphExec;
struct Event;
}  // namespace cuda_emu
using cudaStream_t = cuda_emu::Stream*;
using cudaEvent_t = cuda_emu::Event*;
using cudaGraph_t = cuda_emu::Graph*;
using cudaGraphExec_t = cuda_emu::GraphExec*;

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDeviceReset();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaMalloc(void** p, size_t bytes);
template <class T>
cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(p), bytes); }
cudaError_t cudaFree(void* p);
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned flags);
template <class T>
cudaError_t cudaHostAlloc(T** p, size_t bytes, unsigned flags) { return cudaHostAlloc(reinterpret_cast<void**>(p), bytes, flags); }
cudaError_t cudaMallocHost(void** p, size_t bytes);
// Host memory is the device's here: the device pointer of a mapped allocation is its host pointer.
cudaError_t cudaHostGetDevicePointer(void** device, void* host, unsigned flags);
template <class T>
cudaError_t cudaHostGetDevicePointer(T** device, void* host, unsigned flags) {
  return cudaHostGetDevicePointer(reinterpret_cast<void**>(device), host, flags);
}
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
// Events: a record runs in stream order (now, as streams run their work at once; at replay when captured) and
// takes the host's steady clock, so elapsed times are the emulator's own, not a GPU's.
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value);
template <class F>
cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(func), attr, value);
}

// ---- Device code: math and conversions.
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline int __float_as_int(float f) { return int(__float_as_uint(f)); }
inline float __int_as_float(int i) { return __uint_as_float(uint32_t(i)); }
// Each rounds once: the emulator's translation units are built with -ffp-contract=off.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double __ull2double_rn(unsigned long long v) { return double(v); }
inline float __int2float_rn(int v) { return float(v); }

// CUDA's min and max overloads (integer and floating point), callable unqualified from device code.
#define CUDA_EMU_MINMAX(T)                                \
  inline T min(T a, T b) { return b < a ? b : a; }        \
  inline T max(T a, T b) { return a < b ? b : a; }
CUDA_EMU_MINMAX(int)
CUDA_EMU_MINMAX(unsigned)
CUDA_EMU_MINMAX(long)
CUDA_EMU_MINMAX(unsigned long)
CUDA_EMU_MINMAX(long long)
CUDA_EMU_MINMAX(unsigned long long)
#undef CUDA_EMU_MINMAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }

template <class T>
inline T __ldg(const T* p) { return *p; }
template <class T>
inline T __ldcg(const T* p) { return *p; }
// Blocks run one after another, each to its end: a block's writes are seen by every later one without a fence.
inline void __threadfence() {}

// Fibers never run at the same time, so a read-modify-write is atomic as it stands.
template <class T>
inline T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
  const T old = *p;
  if (old < v) *p = v;
  return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
  const T old = *p;
  if (v < old) *p = v;
  return old;
}
template <class T>
inline T atomicExch(T* p, T v) {
  const T old = *p;
  *p = v;
  return old;
}
template <class T>
inline T atomicCAS(T* p, T compare, T v) {
  const T old = *p;
  if (old == compare) *p = v;
  return old;
}

namespace cuda_emu {

// ---- The running thread (set by the scheduler before each switch into a fiber).
struct Block {
  uint3 idx;
  dim3 dim, grid;
};
struct Thread {
  uint3 idx;
  Block* block;
};
inline thread_local Thread* t_current = nullptr;

// Block and warp synchronisation (cuda_emu.cpp). warp_exchange: this lane's `bytes` (at most 64) go to every
// lane of `mask`; returns the 32 lanes' 64-byte slots, valid until this lane's next warp collective. `complete`,
// when given, is run once by the last lane to arrive, before any lane goes on: it may rewrite every slot (so an
// ldmatrix reads shared memory while the whole warp stands at the instruction, as the hardware's does).
using CompleteFn = void (*)(unsigned char* slots, unsigned mask);
void sync_threads();
void sync_warp(unsigned mask);
const unsigned char* warp_exchange(int kind, unsigned mask, const void* in, size_t bytes, CompleteFn complete = nullptr);
unsigned lane_id();
// Ends the kernel (the launch reports cudaErrorLaunchFailure); never returns. Not declared [[noreturn]]: ASan
// instruments calls to those, and on a fiber's stack that instrumentation warns of a stack it does not know.
void device_fault(const std::string& what);
void* dynamic_shared_base();
template <class T>
T* dynamic_shared() { return static_cast<T*>(dynamic_shared_base()); }

enum Collective { kShfl = 1, kSyncWarp, kMma, kLdmatrix, kVote, kWgmma };

template <class T>
T shuffle(unsigned mask, T v, int mode, int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  const unsigned char* all = warp_exchange(kShfl, mask, &v, sizeof(T));
  const int lane = int(lane_id()), base = lane / width * width;
  int src = lane;
  if (mode == 0) src = base + (arg % width);                                         // __shfl_sync
  else if (mode == 1) src = lane - arg >= base ? lane - arg : lane;                  // up
  else if (mode == 2) src = lane + arg < base + width ? lane + arg : lane;           // down
  else src = ((lane - base) ^ arg) < width ? base + ((lane - base) ^ arg) : lane;    // xor
  if (!((mask >> src) & 1u)) device_fault("shuffle reads lane " + std::to_string(src) + ", which is not in the mask");
  T out;
  std::memcpy(&out, all + 64 * src, sizeof(T));
  return out;
}

// ---- Launch.
struct LaunchConfig {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
};
inline LaunchConfig config(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = nullptr) {
  return {grid, block, smem, stream};
}
// Runs (or, on a capturing stream, records) `body` on every thread of the grid; checks the configuration as the
// driver does and records the launch error for cudaGetLastError.
void launch_body(const LaunchConfig& c, const char* name, const void* func, std::function<void()> body);

template <class... P, class... A>
void launch(const LaunchConfig& c, const char* name, void (*kernel)(P...), A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel argument count");
  // Kernel parameters are copied at launch (and at capture, for a graph), as on the device.
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  launch_body(c, name, reinterpret_cast<const void*>(kernel), [kernel, params] { std::apply(kernel, params); });
}

}  // namespace cuda_emu

// cudaLaunchKernelEx (kernels/cuda/launch.cuh): the launch attributes are accepted and have no effect here, where a
// stream's kernels run one after another (programmatic dependent launch only lets the next one start early).
enum cudaLaunchAttributeID { cudaLaunchAttributeProgrammaticStreamSerialization = 5 };
union cudaLaunchAttributeValue {
  int programmaticStreamSerializationAllowed;
};
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim, blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  cudaLaunchAttribute* attrs;
  unsigned int numAttrs;
};
namespace cuda_emu {
// Test hooks: a launch with the PDL attribute fails with cudaErrorNotSupported, as a driver without PDL would:
// into a capturing stream (invalidating the capture: the CUDA backend's fallback), or anywhere (launch_kernel's).
void refuse_pdl_in_capture(bool on);
void refuse_pdl(bool on);
// Tests of the emulator itself: resume a block's threads in a random order each round (seeded), as
// FLINT_CUDA_EMU_THREAD_ORDER=random:SEED does for a whole process, or (on = false) by thread index again.
void set_random_thread_order(bool on, uint64_t seed = 1);
cudaError_t check_pdl_launch(cudaStream_t stream);
}  // namespace cuda_emu
template <class... P, class... A>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* c, void (*kernel)(P...), A&&... args) {
  for (unsigned i = 0; i < c->numAttrs; ++i) {
    if (c->attrs[i].id != cudaLaunchAttributeProgrammaticStreamSerialization) return cudaErrorInvalidValue;
    if (cudaError_t e = cuda_emu::check_pdl_launch(c->stream); e != cudaSuccess) return e;
  }
  cuda_emu::launch(cuda_emu::config(c->gridDim, c->blockDim, c->dynamicSmemBytes, c->stream), "cudaLaunchKernelEx",
                   kernel, std::forward<A>(args)...);
  return cudaSuccess;  // a bad configuration is cudaGetLastError's, as after <<<>>>
}

inline void __syncthreads() { cuda_emu::sync_threads(); }
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu) { cuda_emu::sync_warp(mask); }
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) { return cuda_emu::shuffle(mask, v, 0, src, width); }
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) { return cuda_emu::shuffle(mask, v, 1, int(delta), width); }
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) { return cuda_emu::shuffle(mask, v, 2, int(delta), width); }
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) { return cuda_emu::shuffle(mask, v, 3, lane_mask, width); }
unsigned __ballot_sync(unsigned mask, int predicate);
int __any_sync(unsigned mask, int predicate);
// The lanes of `mask` whose `value` equals this lane's (the 32-bit form of the intrinsic).
unsigned __match_any_sync(unsigned mask, unsigned value);
int __all_sync(unsigned mask, int predicate);

#define threadIdx (::cuda_emu::t_current->idx)
#define blockIdx (::cuda_emu::t_current->block->idx)
#define blockDim (::cuda_emu::t_current->block->dim)
#define gridDim (::cuda_emu::t_current->block->grid)
