// The CUDA emulator's runtime API: one device ("Flint CUDA emulator", sm_90-like limits), memory that knows which
// ranges are device allocations, streams that run work at once (the order is the stream's), stream capture into
// graphs and their replay, launch checks as the driver makes them, and CUDA's error rules (cudaGetLastError
// clears a launch error; a kernel fault is sticky and every later call returns it).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <thread>
#include <vector>

#include "tests/cuda_emu/emu_internal.h"

namespace cuda_emu {

struct Event {
  std::chrono::steady_clock::time_point at{};
  bool recorded = false;
};

struct Node {
  enum Kind { Kernel, Memcpy, Memset, EventRecord };
  explicit Node(Kind k) : kind(k) {}
  Kind kind;
  LaunchConfig config{};
  std::string name;
  std::function<void()> body;
  void* dst = nullptr;
  const void* src = nullptr;
  size_t bytes = 0;
  int value = 0;
  Event* event = nullptr;
};
struct Graph {
  std::vector<Node> nodes;
};
struct GraphExec {
  std::vector<Node> nodes;
};
struct Stream {
  bool capturing = false, invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id capture_thread;
  Graph* graph = nullptr;
};

namespace {

constexpr size_t kSmemDefault = size_t(48) << 10, kSmemOptinMax = 232448;  // H100 / H200: 227 KiB per block
constexpr size_t kL2Bytes = size_t(50) << 20;  // an H100's
// Streaming multiprocessors: FLINT_CUDA_EMU_SMS, default 16, fewer than a device's 132 so that the matmul's
// folded-split path (taken when a call's tiles alone fill the card) runs at the sizes the emulator can afford.
int sms() {
  static const int n = [] {
    const char* e = std::getenv("FLINT_CUDA_EMU_SMS");
    const int v = e && *e ? std::atoi(e) : 16;
    return v > 0 ? v : 16;
  }();
  return n;
}

// The order a grid's blocks run in: x fastest, then y, then z (the default), or with FLINT_CUDA_EMU_BLOCK_ORDER=reverse
// the other way round, last block first. A device promises no order, so a kernel whose blocks meet through memory
// (a last-block-arrives counter) must give the same results both ways; a block that assumes it runs after another
// shows up in one of them.
bool reverse_blocks() {
  static const bool reverse = [] {
    const char* e = std::getenv("FLINT_CUDA_EMU_BLOCK_ORDER");
    return e && std::strcmp(e, "reverse") == 0;
  }();
  return reverse;
}

struct Alloc {
  size_t bytes;
  bool device;
};

struct State {
  std::recursive_mutex mu;  // one launch (or API call) at a time
  std::map<uintptr_t, Alloc> allocs;
  size_t device_used = 0, device_total = 0;
  std::set<Stream*> streams;
  std::map<const void*, int> smem_limit;
  cudaError_t sticky = cudaSuccess;
  State() {
    const char* mb = std::getenv("FLINT_CUDA_EMU_MEMORY_MB");
    device_total = size_t(mb ? std::strtoull(mb, nullptr, 10) : 4096) << 20;
  }
};
State& st() {
  static State* s = new State;  // never destroyed: static destructors may still free device memory
  return *s;
}
thread_local cudaError_t t_last = cudaSuccess;

cudaError_t fail(cudaError_t e) {
  t_last = e;
  return e;
}

// A capture that this thread's unsafe calls (synchronous copies, allocation, synchronisation) would break, as
// cudaStreamCaptureModeGlobal / ThreadLocal forbid them; the capture is invalidated, as the driver does.
bool capture_forbids(State& s) {
  for (Stream* x : s.streams)
    if (x->capturing && x->mode != cudaStreamCaptureModeRelaxed &&
        (x->mode == cudaStreamCaptureModeGlobal || x->capture_thread == std::this_thread::get_id())) {
      x->invalidated = true;
      return true;
    }
  return false;
}

// Whether [p, p + n) lies inside one allocation of the given kind.
bool inside(State& s, const void* p, size_t n, bool device) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = s.allocs.upper_bound(a);
  if (it == s.allocs.begin()) return false;
  --it;
  return it->second.device == device && a >= it->first && a + n <= it->first + it->second.bytes;
}

cudaError_t check_copy(State& s, void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (n == 0) return cudaSuccess;
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if ((dst_dev && !inside(s, dst, n, true)) || (src_dev && !inside(s, src, n, true))) {
    std::fprintf(stderr, "cuda_emu: cudaMemcpy of %zu bytes (kind %d): a device range is not inside one allocation\n",
                 n, int(kind));
    return cudaErrorInvalidValue;
  }
  if (!dst || !src) return cudaErrorInvalidValue;
  return cudaSuccess;
}

bool valid_stream(State& s, cudaStream_t stream) { return !stream || s.streams.count(stream); }

void run_kernel(State& s, const LaunchConfig& c, const std::string& name, const std::function<void()>& body) {
  std::vector<unsigned char> smem(c.smem);
  const uint64_t blocks = uint64_t(c.grid.x) * c.grid.y * c.grid.z;
  for (uint64_t i = 0; i < blocks; ++i) {
    const uint64_t b = reverse_blocks() ? blocks - 1 - i : i;
    const unsigned x = unsigned(b % c.grid.x), y = unsigned(b / c.grid.x % c.grid.y),
                   z = unsigned(b / c.grid.x / c.grid.y);
    // Shared memory starts as garbage on the device; 0xFF bytes are NaN in bf16 and fp32.
    if (!smem.empty()) std::memset(smem.data(), 0xFF, smem.size());
    std::string fault;
    uint3 thread{};
    if (!run_block(c.grid, c.block, {x, y, z}, body, smem.empty() ? nullptr : smem.data(), &fault, &thread)) {
      std::fprintf(stderr, "cuda_emu: kernel %s, block (%u,%u,%u), thread (%u,%u,%u): %s\n", name.c_str(), x, y, z,
                   thread.x, thread.y, thread.z, fault.c_str());
      s.sticky = cudaErrorLaunchFailure;
      return;
    }
  }
}

void run_node(State& s, const Node& n) {
  if (s.sticky != cudaSuccess) return;
  switch (n.kind) {
    case Node::Kernel: run_kernel(s, n.config, n.name, n.body); break;
    case Node::Memcpy: std::memmove(n.dst, n.src, n.bytes); break;
    case Node::Memset: std::memset(n.dst, n.value, n.bytes); break;
    case Node::EventRecord:
      n.event->at = std::chrono::steady_clock::now();
      n.event->recorded = true;
      break;
  }
}

// Runs a node now, or records it when its stream is capturing.
cudaError_t submit(State& s, cudaStream_t stream, Node n) {
  if (stream && stream->capturing) {
    stream->graph->nodes.push_back(std::move(n));
    return cudaSuccess;
  }
  run_node(s, n);
  return s.sticky;
}

}  // namespace

void launch_body(const LaunchConfig& c, const char* name, const void* func, std::function<void()> body) {
  State& s = st();
  std::lock_guard lock(s.mu);
  if (s.sticky != cudaSuccess) return void(fail(s.sticky));
  const uint64_t threads = uint64_t(c.block.x) * c.block.y * c.block.z;
  if (threads == 0 || threads > uint64_t(max_threads_per_block()) || c.block.z > 64 || c.grid.x == 0 ||
      c.grid.y == 0 || c.grid.z == 0 || c.grid.x > 0x7FFFFFFFu || c.grid.y > 65535 || c.grid.z > 65535) {
    std::fprintf(stderr, "cuda_emu: kernel %s: invalid configuration grid (%u,%u,%u) block (%u,%u,%u)\n", name,
                 c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z);
    return void(fail(cudaErrorInvalidConfiguration));
  }
  const auto limit = s.smem_limit.find(func);
  const size_t smem_max = limit == s.smem_limit.end() ? kSmemDefault : size_t(limit->second);
  if (c.smem > smem_max) {
    std::fprintf(stderr, "cuda_emu: kernel %s: %zu bytes of dynamic shared memory, the function allows %zu\n", name,
                 c.smem, smem_max);
    return void(fail(cudaErrorInvalidValue));
  }
  if (!valid_stream(s, c.stream)) return void(fail(cudaErrorInvalidResourceHandle));
  if (!c.stream && capture_forbids(s)) return void(fail(cudaErrorStreamCaptureUnsupported));
  Node n(Node::Kernel);
  n.config = c;
  n.name = name;
  n.body = std::move(body);
  submit(s, c.stream, std::move(n));
}

bool device_range(const void* p, size_t n) {
  State& s = st();
  std::lock_guard lock(s.mu);  // recursive: a kernel runs under its launch's lock, on this thread
  return inside(s, p, n, true);
}

}  // namespace cuda_emu

using cuda_emu::fail;
using cuda_emu::st;

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "Flint CUDA emulator (CPU)");
  prop->totalGlobalMem = st().device_total;
  prop->sharedMemPerBlock = cuda_emu::kSmemDefault;
  prop->sharedMemPerBlockOptin = cuda_emu::kSmemOptinMax;
  prop->multiProcessorCount = cuda_emu::sms();
  prop->major = 9;
  prop->minor = 0;
  prop->maxThreadsPerBlock = cuda_emu::max_threads_per_block();
  prop->warpSize = 32;
  prop->memoryBusWidth = 5120;
  prop->memoryClockRate = 2619000;
  prop->clockRate = 1980000;
  prop->l2CacheSize = cuda_emu::kL2Bytes;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {  // the properties' values
  if (device != 0) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = cuda_emu::sms(); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(cuda_emu::kSmemOptinMax); return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrL2CacheSize: *value = int(cuda_emu::kL2Bytes); return cudaSuccess;
  }
  return fail(cudaErrorInvalidValue);
}
cudaError_t cudaDeviceSynchronize() {
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (cuda_emu::capture_forbids(s)) return fail(cudaErrorStreamCaptureUnsupported);
  return s.sticky;
}
cudaError_t cudaDeviceReset() { return cudaSuccess; }
cudaError_t cudaGetLastError() {
  const cudaError_t e = st().sticky != cudaSuccess ? st().sticky : cuda_emu::t_last;
  cuda_emu::t_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return st().sticky != cudaSuccess ? st().sticky : cuda_emu::t_last; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
#define CUDA_EMU_NAME(x) \
  case x: return #x;
    CUDA_EMU_NAME(cudaSuccess)
    CUDA_EMU_NAME(cudaErrorInvalidValue)
    CUDA_EMU_NAME(cudaErrorMemoryAllocation)
    CUDA_EMU_NAME(cudaErrorInitializationError)
    CUDA_EMU_NAME(cudaErrorInvalidConfiguration)
    CUDA_EMU_NAME(cudaErrorInvalidDevice)
    CUDA_EMU_NAME(cudaErrorInvalidResourceHandle)
    CUDA_EMU_NAME(cudaErrorNotReady)
    CUDA_EMU_NAME(cudaErrorIllegalAddress)
    CUDA_EMU_NAME(cudaErrorLaunchOutOfResources)
    CUDA_EMU_NAME(cudaErrorLaunchTimeout)
    CUDA_EMU_NAME(cudaErrorHardwareStackError)
    CUDA_EMU_NAME(cudaErrorIllegalInstruction)
    CUDA_EMU_NAME(cudaErrorMisalignedAddress)
    CUDA_EMU_NAME(cudaErrorInvalidAddressSpace)
    CUDA_EMU_NAME(cudaErrorInvalidPc)
    CUDA_EMU_NAME(cudaErrorLaunchFailure)
    CUDA_EMU_NAME(cudaErrorAssert)
    CUDA_EMU_NAME(cudaErrorECCUncorrectable)
    CUDA_EMU_NAME(cudaErrorContextIsDestroyed)
    CUDA_EMU_NAME(cudaErrorStreamCaptureUnsupported)
    CUDA_EMU_NAME(cudaErrorStreamCaptureInvalidated)
    CUDA_EMU_NAME(cudaErrorStreamCaptureUnmatched)
    CUDA_EMU_NAME(cudaErrorStreamCaptureWrongThread)
    CUDA_EMU_NAME(cudaErrorNoDevice)
    CUDA_EMU_NAME(cudaErrorNotSupported)
    CUDA_EMU_NAME(cudaErrorUnknown)
#undef CUDA_EMU_NAME
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure (emulated kernel fault; see stderr)";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    default: return cudaGetErrorName(e);
  }
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  *p = nullptr;
  if (s.sticky != cudaSuccess) return fail(s.sticky);
  if (cuda_emu::capture_forbids(s)) return fail(cudaErrorStreamCaptureUnsupported);
  if (bytes == 0) return cudaSuccess;
  if (bytes > s.device_total - s.device_used) return fail(cudaErrorMemoryAllocation);
  *p = ::operator new(bytes, std::align_val_t(256));
  s.allocs[reinterpret_cast<uintptr_t>(*p)] = {bytes, true};
  s.device_used += bytes;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (cuda_emu::capture_forbids(s)) return fail(cudaErrorStreamCaptureUnsupported);
  const auto it = s.allocs.find(reinterpret_cast<uintptr_t>(p));
  if (it == s.allocs.end() || !it->second.device) return fail(cudaErrorInvalidValue);
  s.device_used -= it->second.bytes;
  s.allocs.erase(it);
  ::operator delete(p, std::align_val_t(256));
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  *p = ::operator new(bytes ? bytes : 1, std::align_val_t(256));
  s.allocs[reinterpret_cast<uintptr_t>(*p)] = {bytes, false};
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaHostAlloc(p, bytes, 0); }
cudaError_t cudaHostGetDevicePointer(void** device, void* host, unsigned) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  const auto it = s.allocs.find(reinterpret_cast<uintptr_t>(host));
  if (it == s.allocs.end() || it->second.device) return fail(cudaErrorInvalidValue);
  *device = host;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  if (!p) return cudaSuccess;
  auto& s = st();
  std::lock_guard lock(s.mu);
  const auto it = s.allocs.find(reinterpret_cast<uintptr_t>(p));
  if (it == s.allocs.end() || it->second.device) return fail(cudaErrorInvalidValue);
  s.allocs.erase(it);
  ::operator delete(p, std::align_val_t(256));
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  *free_bytes = s.device_total - s.device_used;
  *total_bytes = s.device_total;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (s.sticky != cudaSuccess) return fail(s.sticky);
  if (cuda_emu::capture_forbids(s)) return fail(cudaErrorStreamCaptureUnsupported);
  if (cudaError_t e = cuda_emu::check_copy(s, dst, src, bytes, kind); e != cudaSuccess) return fail(e);
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (s.sticky != cudaSuccess) return fail(s.sticky);
  if (!cuda_emu::valid_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle);
  if (!stream && cuda_emu::capture_forbids(s)) return fail(cudaErrorStreamCaptureUnsupported);
  if (cudaError_t e = cuda_emu::check_copy(s, dst, src, bytes, kind); e != cudaSuccess) return fail(e);
  if (!bytes) return cudaSuccess;
  cuda_emu::Node n(cuda_emu::Node::Memcpy);
  n.dst = dst;
  n.src = src;
  n.bytes = bytes;
  return cuda_emu::submit(s, stream, std::move(n));
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (s.sticky != cudaSuccess) return fail(s.sticky);
  if (!cuda_emu::valid_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle);
  if (!stream && cuda_emu::capture_forbids(s)) return fail(cudaErrorStreamCaptureUnsupported);
  if (bytes && !cuda_emu::inside(s, p, bytes, true)) return fail(cudaErrorInvalidValue);
  cuda_emu::Node n(cuda_emu::Node::Memset);
  n.dst = p;
  n.bytes = bytes;
  n.value = value;
  return cuda_emu::submit(s, stream, std::move(n));
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) { return cudaMemsetAsync(p, value, bytes, nullptr); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  *stream = new cuda_emu::Stream;
  s.streams.insert(*stream);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (!stream || !s.streams.erase(stream)) return fail(cudaErrorInvalidResourceHandle);
  delete stream->graph;
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (!cuda_emu::valid_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle);
  if ((stream && stream->capturing) || (!stream && cuda_emu::capture_forbids(s))) {
    if (stream) stream->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  return s.sticky;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (!stream || !s.streams.count(stream)) return fail(stream ? cudaErrorInvalidResourceHandle : cudaErrorStreamCaptureUnsupported);
  if (stream->capturing) return fail(cudaErrorInvalidValue);
  stream->capturing = true;
  stream->invalidated = false;
  stream->mode = mode;
  stream->capture_thread = std::this_thread::get_id();
  stream->graph = new cuda_emu::Graph;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  *graph = nullptr;
  if (!stream || !s.streams.count(stream) || !stream->capturing) return fail(cudaErrorInvalidValue);
  if (stream->capture_thread != std::this_thread::get_id() && stream->mode != cudaStreamCaptureModeRelaxed)
    return fail(cudaErrorStreamCaptureWrongThread);
  stream->capturing = false;
  if (stream->invalidated) {
    delete stream->graph;
    stream->graph = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = stream->graph;
  stream->graph = nullptr;
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (!cuda_emu::valid_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle);
  *status = !stream || !stream->capturing ? cudaStreamCaptureStatusNone
            : stream->invalidated         ? cudaStreamCaptureStatusInvalidated
                                          : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}
namespace cuda_emu {
namespace {
std::atomic<bool> g_refuse_pdl_in_capture{false}, g_refuse_pdl{false};
}
void refuse_pdl_in_capture(bool on) { g_refuse_pdl_in_capture = on; }
void refuse_pdl(bool on) { g_refuse_pdl = on; }
cudaError_t check_pdl_launch(cudaStream_t stream) {
  if (!g_refuse_pdl_in_capture && !g_refuse_pdl) return cudaSuccess;
  auto& s = st();
  std::lock_guard lock(s.mu);
  const bool capturing = stream && valid_stream(s, stream) && stream->capturing;
  if (!g_refuse_pdl && !capturing) return cudaSuccess;
  if (!capturing) return fail(cudaErrorNotSupported);
  stream->invalidated = true;
  return fail(cudaErrorNotSupported);
}
}  // namespace cuda_emu
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return fail(cudaErrorInvalidValue);
  *exec = new cuda_emu::GraphExec{graph->nodes};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (!exec) return fail(cudaErrorInvalidValue);
  if (s.sticky != cudaSuccess) return fail(s.sticky);
  if (!cuda_emu::valid_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle);
  if (stream && stream->capturing) return fail(cudaErrorStreamCaptureUnsupported);
  for (const cuda_emu::Node& n : exec->nodes) cuda_emu::run_node(s, n);
  return s.sticky;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new cuda_emu::Event;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  if (!cuda_emu::valid_stream(s, stream)) return fail(cudaErrorInvalidResourceHandle);
  cuda_emu::Node n(cuda_emu::Node::EventRecord);
  n.event = e;
  return cuda_emu::submit(s, stream, std::move(n));
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {  // the work before a record has already run
  return e ? st().sticky : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end) return fail(cudaErrorInvalidResourceHandle);
  if (!start->recorded || !end->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  auto& s = st();
  std::lock_guard lock(s.mu);
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || size_t(value) > cuda_emu::kSmemOptinMax)
    return fail(cudaErrorInvalidValue);
  s.smem_limit[func] = value;
  return cudaSuccess;
}
