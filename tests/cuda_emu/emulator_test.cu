// The CUDA emulator's own tests: what it promises (tests/cuda_emu/README.md) it does, and what it must catch it
// catches. Written as CUDA and translated like the kernels (scripts/cuda-emu-translate.py); built only for the
// emulator (the device needs none of this).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cuda/device_util.cuh"

namespace {

using flint::cuda::cp_async16;
using flint::cuda::cp_async_commit;
using flint::cuda::cp_async_wait;
using flint::cuda::ldmatrix_x4;
using flint::cuda::prefetch_l2;
using flint::cuda::mma_m16n8k16;
using flint::cuda::wgmma_commit;
using flint::cuda::wgmma_desc_sw128;
using flint::cuda::wgmma_fence;
using flint::cuda::wgmma_m64n128k16;
using flint::cuda::wgmma_m64n64k16;
using flint::cuda::wgmma_wait;

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <class T>
struct Dev {
  T* p = nullptr;
  size_t n;
  explicit Dev(size_t count) : n(count) { EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess); }
  explicit Dev(const std::vector<T>& v) : Dev(v.size()) { EXPECT_EQ(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess); }
  ~Dev() { cudaFree(p); }
  std::vector<T> get() const {
    std::vector<T> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
};

// ---- mma and ldmatrix: one 16×16 (A, row-major) by 16×8 (B, stored as 8 rows of k: column-major) tile. A comes
// through ldmatrix.x4 (lane l gives row l % 16, columns (l / 16) · 8 ..), B through ldmatrix.x4.trans from a k-major
// 16×8 copy and, separately, through plain register packing; D must equal the host's product either way. The
// two loading idioms and the mma's layout agree only if each follows the PTX ISA.
__global__ void mma_tile(const uint16_t* a, const uint16_t* b_kn, const uint16_t* b_nk, float* d_ld, float* d_reg) {
  alignas(16) __shared__ uint16_t sa[16][16];
  alignas(16) __shared__ uint16_t sb[16][8];
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  for (int i = lane; i < 256; i += 32) sa[i / 16][i % 16] = a[i];
  for (int i = lane; i < 128; i += 32) sb[i / 8][i % 8] = b_kn[i];
  __syncwarp();
  uint32_t af[4], bf[4];
  ldmatrix_x4<false>(af, &sa[lane % 16][(lane / 16) * 8]);
  // Matrices 0 and 1 of the .trans load: k rows 0..7 and 8..15 of B (k-major), transposed into b0 and b1.
  ldmatrix_x4<true>(bf, &sb[lane % 16][0]);
  float acc[4] = {0, 0, 0, 0};
  // ldmatrix's matrices 0..3 are A's (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (8-15, 8-15).
  mma_m16n8k16(acc, af[0], af[1], af[2], af[3], bf[0], bf[1]);
  d_ld[g * 8 + 2 * t] = acc[0], d_ld[g * 8 + 2 * t + 1] = acc[1];
  d_ld[(g + 8) * 8 + 2 * t] = acc[2], d_ld[(g + 8) * 8 + 2 * t + 1] = acc[3];
  // The documented register layout, packed by hand.
  auto pair = [](const uint16_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 16; };
  const uint32_t a0 = pair(&a[g * 16 + 2 * t]), a1 = pair(&a[(g + 8) * 16 + 2 * t]);
  const uint32_t a2 = pair(&a[g * 16 + 2 * t + 8]), a3 = pair(&a[(g + 8) * 16 + 2 * t + 8]);
  const uint32_t b0 = pair(&b_nk[g * 16 + 2 * t]), b1 = pair(&b_nk[g * 16 + 2 * t + 8]);
  float r[4] = {1, 1, 1, 1};  // C = 1: the accumulate path
  mma_m16n8k16(r, a0, a1, a2, a3, b0, b1);
  d_reg[g * 8 + 2 * t] = r[0], d_reg[g * 8 + 2 * t + 1] = r[1];
  d_reg[(g + 8) * 8 + 2 * t] = r[2], d_reg[(g + 8) * 8 + 2 * t + 1] = r[3];
}

TEST(CudaEmu, MmaAndLdmatrixFollowThePtxLayouts) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-2, 2);
  std::vector<uint16_t> a(256), b_kn(128), b_nk(128);
  for (auto& x : a) x = to_bf16(u(rng));
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n) b_kn[k * 8 + n] = b_nk[n * 16 + k] = to_bf16(u(rng));
  Dev<uint16_t> da(a), dkn(b_kn), dnk(b_nk);
  Dev<float> d_ld(128), d_reg(128);
  mma_tile<<<1, 32>>>(da.p, dkn.p, dnk.p, d_ld.p, d_reg.p);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> got_ld = d_ld.get(), got_reg = d_reg.get();
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double want = 0;
      for (int k = 0; k < 16; ++k) want += double(from_bf16(a[m * 16 + k])) * from_bf16(b_kn[k * 8 + n]);
      EXPECT_FLOAT_EQ(got_ld[m * 8 + n], float(want)) << m << "," << n;
      EXPECT_FLOAT_EQ(got_reg[m * 8 + n], float(want + 1)) << m << "," << n;
    }
}

// ---- wgmma: one warpgroup, A (64 × 32, row-major) from registers in the mma.sync A layout, B (32 k × kN
// columns, given column by column) in shared memory K-major with the 128-byte swizzle, two k16 steps through the
// descriptor's k offset (0 and 32 bytes); m64n128k16 and m64n64k16. The result is D = 1 + A·B with each k16 step
// rounded once, as mma.sync's emulation rounds; read before the wait, the accumulators still hold their old values.
template <int kN>
__global__ void wgmma_tile(const uint16_t* a, const uint16_t* b_nk, float* d_out, float* d_early) {
  extern __shared__ uint8_t wg_tile[];  // kN rows of 128 bytes; k 0..31 of each row used
  for (int i = threadIdx.x; i < kN * 32; i += 128) {
    const int n = i / 32, byte = 2 * (i % 32);
    std::memcpy(wg_tile + n * 128 + ((byte / 16) ^ (n % 8)) * 16 + byte % 16, &b_nk[i], 2);
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4, r = 16 * warp + g;
  auto pair = [](const uint16_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 16; };
  float d[kN / 2];
  for (float& x : d) x = 1.0f;
  wgmma_fence();
  for (int h = 0; h < 2; ++h) {
    const uint32_t a0 = pair(&a[r * 32 + 16 * h + 2 * t]), a1 = pair(&a[(r + 8) * 32 + 16 * h + 2 * t]);
    const uint32_t a2 = pair(&a[r * 32 + 16 * h + 2 * t + 8]), a3 = pair(&a[(r + 8) * 32 + 16 * h + 2 * t + 8]);
    if constexpr (kN == 128)
      wgmma_m64n128k16(d, a0, a1, a2, a3, wgmma_desc_sw128(wg_tile, 32 * h));
    else
      wgmma_m64n64k16(d, a0, a1, a2, a3, wgmma_desc_sw128(wg_tile, 32 * h));
  }
  wgmma_commit();
  auto store = [&](float* out) {
    for (int j = 0; j < kN / 8; ++j)
      for (int q = 0; q < 4; ++q) out[(r + (q >= 2 ? 8 : 0)) * kN + 8 * j + 2 * t + (q & 1)] = d[4 * j + q];
  };
  store(d_early);
  wgmma_wait<0>();
  store(d_out);
}

template <int kN>
void check_wgmma_tile() {
  std::mt19937 rng(9 + kN);
  std::uniform_real_distribution<float> u(-2, 2);
  std::vector<uint16_t> a(64 * 32), b(kN * 32);
  for (auto& x : a) x = to_bf16(u(rng));
  for (auto& x : b) x = to_bf16(u(rng));
  Dev<uint16_t> da(a), db(b);
  Dev<float> out(64 * kN), early(64 * kN);
  wgmma_tile<kN><<<1, 128, kN * 128>>>(da.p, db.p, out.p, early.p);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> got = out.get(), before = early.get();
  for (int m = 0; m < 64; ++m)
    for (int n = 0; n < kN; ++n) {
      double s = 1.0;
      for (int k = 0; k < 16; ++k) s += double(from_bf16(a[m * 32 + k])) * from_bf16(b[n * 32 + k]);
      s = float(s);
      for (int k = 16; k < 32; ++k) s += double(from_bf16(a[m * 32 + k])) * from_bf16(b[n * 32 + k]);
      ASSERT_EQ(got[m * kN + n], float(s)) << "n" << kN << " " << m << "," << n;
      ASSERT_EQ(before[m * kN + n], 1.0f) << "read before wgmma.wait_group saw the result";
    }
}

TEST(CudaEmu, WgmmaFollowsThePtxLayoutsAndRunsAtItsWait) {
  check_wgmma_tile<128>();
  check_wgmma_tile<64>();
}

__global__ void block_sum_for_events(int* out) {
  if (threadIdx.x == 0) out[blockIdx.x] = int(blockIdx.x);
}

// ---- Events: a record takes the host clock in stream order; elapsed time between two records, an error for an
// event never recorded.
TEST(CudaEmu, EventsTimeStreamWorkAndRefuseAnUnrecordedOne) {
  cudaEvent_t a = nullptr, b = nullptr, never = nullptr;
  ASSERT_EQ(cudaEventCreate(&a), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&b), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&never), cudaSuccess);
  Dev<int> out(3);
  ASSERT_EQ(cudaEventRecord(a), cudaSuccess);
  block_sum_for_events<<<3, 64>>>(out.p);
  ASSERT_EQ(cudaEventRecord(b), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(b), cudaSuccess);
  float ms = -1;
  ASSERT_EQ(cudaEventElapsedTime(&ms, a, b), cudaSuccess);
  EXPECT_GE(ms, 0.0f);
  EXPECT_NE(cudaEventElapsedTime(&ms, a, never), cudaSuccess);
  (void)cudaGetLastError();  // the refusal is a launch-style error: clear it
  int* host = nullptr;
  int* mapped = nullptr;
  ASSERT_EQ(cudaHostAlloc(&host, sizeof(int), cudaHostAllocMapped), cudaSuccess);
  ASSERT_EQ(cudaHostGetDevicePointer(&mapped, host, 0), cudaSuccess);
  EXPECT_EQ(mapped, host);  // host memory is the device's here
  cudaFreeHost(host);
  cudaEventDestroy(a), cudaEventDestroy(b), cudaEventDestroy(never);
}

// ---- Shuffles.
__global__ void shuffles(int* out) {
  const int lane = threadIdx.x;
  out[lane] = __shfl_xor_sync(0xFFFFFFFFu, lane * 10, 5);
  out[32 + lane] = __shfl_down_sync(0xFFFFFFFFu, lane * 10, 3);
  out[64 + lane] = __shfl_up_sync(0xFFFFFFFFu, lane * 10, 3);
  out[96 + lane] = __shfl_sync(0xFFFFFFFFu, lane * 10, 7);
  out[128 + lane] = __shfl_xor_sync(0xFFFFFFFFu, lane * 10, 1, 8);
}

TEST(CudaEmu, ShufflesReadTheLanesCudaDefines) {
  Dev<int> out(160);
  shuffles<<<1, 32>>>(out.p);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> v = out.get();
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(v[l], (l ^ 5) * 10);
    EXPECT_EQ(v[32 + l], (l + 3 < 32 ? l + 3 : l) * 10);
    EXPECT_EQ(v[64 + l], (l >= 3 ? l - 3 : l) * 10);
    EXPECT_EQ(v[96 + l], 70);
    EXPECT_EQ(v[128 + l], (l ^ 1) * 10);
  }
}

// ---- Block barrier and shared memory: each thread writes its slot, the block sums after the barrier.
__global__ void block_sum(int* out) {
  __shared__ int vals[256];
  vals[threadIdx.x] = int(threadIdx.x + blockIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) {
    int s = 0;
    for (int i = 0; i < int(blockDim.x); ++i) s += vals[i];
    out[blockIdx.x] = s;
  }
}

TEST(CudaEmu, SyncthreadsOrdersSharedMemoryAcrossTheBlock) {
  Dev<int> out(3);
  block_sum<<<3, 256>>>(out.p);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> v = out.get();
  for (int b = 0; b < 3; ++b) EXPECT_EQ(v[b], 255 * 256 / 2 + 256 * b);
}

// ---- A missing barrier: each thread reads what the thread `back` places before it wrote (32: the warp before,
// a missing __syncthreads; 1: the lane before, a missing __syncwarp). In thread order the writer always runs first
// and the race passes unseen; FLINT_CUDA_EMU_THREAD_ORDER=random lets a reader run first.
template <bool kBarrier>
__global__ void read_back(int base, int back, int* out) {
  __shared__ int slots[256];
  slots[threadIdx.x] = base + int(threadIdx.x);
  if (kBarrier) __syncthreads();
  out[threadIdx.x] = int(threadIdx.x) >= back ? slots[int(threadIdx.x) - back] : base + int(threadIdx.x) - back;
}

// How many of the 256 threads read a value other than base + their index - back (the writer's, this launch).
template <bool kBarrier>
int stale_reads(int base, int back) {
  Dev<int> out(256);
  read_back<kBarrier><<<1, 256>>>(base, back, out.p);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  int stale = 0;
  const std::vector<int> v = out.get();
  for (int t = 0; t < 256; ++t) stale += v[size_t(t)] != base + t - back;
  return stale;
}

TEST(CudaEmu, RandomThreadOrderShowsAMissingBarrier) {
  for (const int back : {32, 1}) {
    EXPECT_EQ(stale_reads<false>(1000, back), 0);  // thread order: the race goes unseen
    int caught = 0;
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      cuda_emu::set_random_thread_order(true, seed);
      caught += stale_reads<false>(int(2000 * seed), back) > 0;
      EXPECT_EQ(stale_reads<true>(int(3000 * seed), back), 0) << "seed " << seed;  // with the barrier: right
    }
    cuda_emu::set_random_thread_order(false);
    EXPECT_EQ(caught, 4) << "back " << back;
    EXPECT_EQ(stale_reads<false>(5000, back), 0);
  }
}

// ---- cp.async: a copy lands when a wait covers it, so a read without its wait sees the old bytes.
__global__ void cp_async_reads(const uint4* src, uint4* waited, uint4* unwaited) {
  extern __shared__ uint4 buf[];
  buf[threadIdx.x] = make_uint4(7, 7, 7, 7);
  cp_async16(&buf[threadIdx.x], &src[threadIdx.x], true);
  cp_async_commit();
  unwaited[threadIdx.x] = buf[threadIdx.x];
  cp_async_wait<0>();
  waited[threadIdx.x] = buf[threadIdx.x];
}

TEST(CudaEmu, CpAsyncLandsOnlyWhenWaitedFor) {
  std::vector<uint4> src(32);
  for (unsigned i = 0; i < 32; ++i) src[i] = make_uint4(i, i + 1, i + 2, i + 3);
  Dev<uint4> s(src), w(32), nw(32);
  cp_async_reads<<<1, 32, 32 * sizeof(uint4)>>>(s.p, w.p, nw.p);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<uint4> got = w.get(), early = nw.get();
  for (unsigned i = 0; i < 32; ++i) {
    EXPECT_EQ(got[i].x, i);
    EXPECT_EQ(got[i].w, i + 3);
    EXPECT_EQ(early[i].x, 7u) << "read before cp.async.wait_group saw the copy";
  }
}

// ---- Launch checks, as the driver makes them.
__global__ void noop() {}

TEST(CudaEmu, LaunchChecksRefuseBadConfigurations) {
  noop<<<1, 2048>>>();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  noop<<<dim3(1, 70000), 32>>>();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  noop<<<1, 32, 64 << 10>>>();  // over 48 KiB without the attribute
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  ASSERT_EQ(cudaFuncSetAttribute(noop, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10), cudaSuccess);
  noop<<<1, 32, 64 << 10>>>();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaFuncSetAttribute(noop, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 << 10), cudaErrorInvalidValue);
}

TEST(CudaEmu, CopiesCheckTheirDeviceRanges) {
  Dev<float> d(4);
  std::vector<float> host(8);
  EXPECT_EQ(cudaMemcpy(d.p, host.data(), 8 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), d.p, 4 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), d.p, 4 * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaGetLastError();
}

// ---- Graphs: capture records (nothing runs), replay runs with the inputs of the moment; a synchronising call
// during a thread-local capture is refused and invalidates it.
__global__ void add_one(const int* in, int* out) { out[threadIdx.x] = in[threadIdx.x] + 1; }

TEST(CudaEmu, GraphsRecordAndReplayAndRefuseUnsafeCallsDuringCapture) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  int* pinned;
  ASSERT_EQ(cudaHostAlloc(&pinned, 4 * sizeof(int), cudaHostAllocDefault), cudaSuccess);
  Dev<int> in(4), out(4);
  ASSERT_EQ(cudaMemset(out.p, 0, 4 * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(in.p, pinned, 4 * sizeof(int), cudaMemcpyHostToDevice, s), cudaSuccess);
  add_one<<<1, 4, 0, s>>>(in.p, out.p);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  cudaGraph_t g;
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  EXPECT_EQ(out.get(), std::vector<int>(4, 0)) << "captured work ran during capture";
  cudaGraphExec_t e;
  ASSERT_EQ(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 4; ++i) pinned[i] = 100 * round + i;
    ASSERT_EQ(cudaGraphLaunch(e, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_EQ(out.get(), (std::vector<int>{100 * round + 1, 100 * round + 2, 100 * round + 3, 100 * round + 4}));
  }
  cudaGraphExecDestroy(e);
  cudaGraphDestroy(g);

  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, 64), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
  cudaGetLastError();
  cudaFreeHost(pinned);
  cudaStreamDestroy(s);
}

// ---- Faults end the kernel and stick, as on a device: each runs in a child process.
__global__ void lane_exits_before_shuffle(int* out) {
  if (threadIdx.x == 0) return;
  out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, int(threadIdx.x), 1);
}
__global__ void misaligned_ldmatrix() {
  alignas(16) __shared__ uint16_t rows[64 * 8 + 8];
  uint32_t r[4];
  ldmatrix_x4<false>(r, &rows[threadIdx.x * 8 + 1]);
}
__global__ void mismatched_collectives(int* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, 1, 1);
  else __syncwarp();
}

// d is a 64-int allocation: the last 16 bytes are inside it, 32 bytes from there are not.
__global__ void prefetch_past_the_allocation(int* d) { prefetch_l2(d + 60, 32); }
__global__ void misaligned_prefetch(int* d) { prefetch_l2(d + 1, 16); }

void expect_fault(void (*launch)(int*), const char* message) {
  EXPECT_EXIT(
      {
        int* d = nullptr;
        cudaMalloc(&d, 64 * sizeof(int));
        launch(d);
        const bool sticky = cudaGetLastError() == cudaErrorLaunchFailure && cudaDeviceSynchronize() == cudaErrorLaunchFailure &&
                            cudaMemcpy(&d, d, 4, cudaMemcpyDeviceToHost) == cudaErrorLaunchFailure;
        std::exit(sticky ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), message);
}

TEST(CudaEmuDeathTest, FaultsEndTheKernelStickAndSayWhy) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  expect_fault([](int* d) { lane_exits_before_shuffle<<<1, 32>>>(d); }, "lane_exits_before_shuffle.*deadlock");
  expect_fault([](int*) { misaligned_ldmatrix<<<1, 32>>>(); }, "ldmatrix: a row address not 16-byte aligned");
  expect_fault([](int* d) { mismatched_collectives<<<1, 32>>>(d); }, "warp collectives do not match");
  expect_fault([](int* d) { prefetch_past_the_allocation<<<1, 32>>>(d); }, "prefetch.L2: the range is not inside");
  expect_fault([](int* d) { misaligned_prefetch<<<1, 32>>>(d); }, "prefetch.L2: address or size not a multiple of 16");
}

__global__ void prefetch_inside(int* d) { prefetch_l2(d + 48, 64); }

TEST(CudaEmu, AnL2PrefetchInsideAnAllocationRunsAndChangesNothing) {
  int* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 64 * sizeof(int)), cudaSuccess);
  prefetch_inside<<<1, 32>>>(d);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(d);
}

}  // namespace
