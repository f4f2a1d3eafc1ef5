// The CUDA emulator's device side: blocks run one at a time, each thread a fiber (its own stack) switched only where a
// CUDA thread may wait for others (__syncthreads, the warp collectives); the warp collectives and the tensor-core,
// ldmatrix and cp.async instructions as the PTX ISA defines them; faults that end a kernel.
#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/cuda_emu/device_util_emu.h"
#include "tests/cuda_emu/emu_internal.h"

#if defined(__SANITIZE_ADDRESS__)  // GCC
#define CUDA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)  // clang
#define CUDA_EMU_ASAN 1
#endif
#endif
#ifdef CUDA_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

// The switch between fibers: x86-64 System V saves the callee-saved registers, the SSE control/status word and the
// x87 control word on the old stack, stores its stack pointer, loads the new one and restores the same (glibc's
// swapcontext would also make a system call per switch to save the signal mask, which a fiber never changes).
extern "C" void cuda_emu_switch(void** save_sp, void* new_sp);
asm(R"(
.text
.globl cuda_emu_switch
.type cuda_emu_switch, @function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size cuda_emu_switch, .-cuda_emu_switch
.section .note.GNU-stack,"",@progbits
.text
)");

namespace cuda_emu {
namespace {

constexpr size_t kStackBytes = size_t(256) << 10;
constexpr int kMaxThreads = 1024;

struct Copy {
  void* dst;
  const void* src;
  bool fill;
  int bytes;  // 16, or 4 (cp.async.ca)
};

// One wgmma.mma_async of this thread, run when a wgmma.wait_group covers it.
struct WgmmaOp {
  uint32_t a[4];
  float* d;
  uint64_t desc;
  int n;  // 128 or 64 (m64n128k16, m64n64k16)
};

// A thread's asynchronous operations of one kind (cp.async copies, wgmmas): issued into `open`, committed as a
// group, run oldest group first when a wait leaves at most `pending` groups outstanding.
template <class Op>
struct AsyncGroups {
  std::vector<Op> open;
  std::deque<std::vector<Op>> groups;
  void commit() {
    groups.push_back(std::move(open));
    open.clear();
  }
  void clear() {
    open.clear();
    groups.clear();
  }
  template <class Run>
  void wait(int pending, Run&& run) {
    while (int(groups.size()) > pending) {
      for (const Op& op : groups.front()) run(op);
      groups.pop_front();
    }
  }
};

struct Warp {
  int arrived = 0;
  uint64_t gen = 0;
  int kind = 0;
  unsigned mask = 0;
  alignas(16) unsigned char slots[2][32][64];
};

struct Fiber : Thread {
  void* sp = nullptr;  // the saved stack pointer while switched out
  void* stack = nullptr;
  int linear = 0;
  bool done = false;
  const uint64_t* wait_gen = nullptr;  // waiting while *wait_gen == wait_val
  uint64_t wait_val = 0;
  int wait_kind = 0;                   // 0: __syncthreads, else the warp collective's kind
  AsyncGroups<Copy> copies;            // cp.async
  AsyncGroups<WgmmaOp> wgmmas;
  void* asan_fake = nullptr;
};

// The block being run. Launches are serialised (emu_internal.h's launch lock), so one is enough.
struct BlockRun {
  Block block;
  std::vector<std::unique_ptr<Fiber>> fibers;
  std::vector<Warp> warps;
  int threads = 0, live = 0, bar_arrived = 0;
  uint64_t bar_gen = 0;
  const std::function<void()>* body = nullptr;
  void* dynamic_smem = nullptr;
  void* sched_sp = nullptr;
  bool faulted = false;
  std::string fault;
  uint3 fault_thread{};
  void* sched_fake = nullptr;
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
};
BlockRun g_run;

Fiber& cur() {
  if (!t_current) throw std::logic_error("cuda_emu: device function called outside a kernel");
  return *static_cast<Fiber*>(t_current);
}

const char* kind_name(int kind) {
  switch (kind) {
    case 0: return "__syncthreads";
    case kShfl: return "a shuffle";
    case kSyncWarp: return "__syncwarp";
    case kMma: return "mma.sync";
    case kLdmatrix: return "ldmatrix";
    case kVote: return "a vote";
    case kWgmma: return "wgmma";
  }
  return "?";
}

// Back to the scheduler until *gen changes.
void wait_for(const uint64_t* gen, int kind) {
  Fiber& f = cur();
  f.wait_gen = gen;
  f.wait_val = *gen;
  f.wait_kind = kind;
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(&f.asan_fake, g_run.sched_bottom, g_run.sched_size);
#endif
  cuda_emu_switch(&f.sp, g_run.sched_sp);
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake, &g_run.sched_bottom, &g_run.sched_size);
#endif
}

void perform(const Copy& c) {
  if (c.fill) std::memcpy(c.dst, c.src, size_t(c.bytes));
  else std::memset(c.dst, 0, size_t(c.bytes));
}

void release_barrier_if_complete() {
  if (g_run.bar_arrived > 0 && g_run.bar_arrived == g_run.live) {
    g_run.bar_arrived = 0;
    ++g_run.bar_gen;
  }
}

// The fiber's last switch: it is done (ended, or ended by a fault) and is never resumed. (Like device_fault, not
// declared [[noreturn]], so that ASan does not instrument its calls on the fiber's stack.)
void leave_fiber(Fiber& f) {
  f.copies.clear();
  f.wgmmas.clear();
  f.done = true;
  --g_run.live;
  release_barrier_if_complete();
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, g_run.sched_bottom, g_run.sched_size);
#endif
  // The stack pointer goes to the heap-held Fiber: a local would live in ASan's fake stack of this fiber, which
  // the annotation above has just released.
  cuda_emu_switch(&f.sp, g_run.sched_sp);
  // Never reached: a finished fiber is not resumed. (Not __builtin_unreachable: that would let the compiler treat
  // the switch as a call that does not return and have ASan check the stack before it, between the two halves of
  // the fiber-switch annotation, which ASan warns about.)
  std::abort();
}

void fiber_main() {
  Fiber& f = cur();
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g_run.sched_bottom, &g_run.sched_size);
#endif
  (*g_run.body)();
  // Copies still in flight land before the thread's block ends.
  f.copies.commit();
  f.copies.wait(0, [](const Copy& c) { perform(c); });
  leave_fiber(f);
}

// A fresh fiber's stack, laid out as cuda_emu_switch leaves a switched-out one: its `ret` enters fiber_main with
// the stack aligned as after a call.
void* initial_stack(void* stack) {
  auto top = (reinterpret_cast<uintptr_t>(stack) + kStackBytes) & ~uintptr_t(15);
  auto* w = reinterpret_cast<uint64_t*>(top);
  w[-1] = 0;                                               // fiber_main's return address: it never returns
  w[-2] = reinterpret_cast<uint64_t>(&fiber_main);         // popped by ret
  for (int i = 3; i <= 8; ++i) w[-i] = 0;                  // rbp, rbx, r12 .. r15
  const uint32_t mxcsr = 0x1F80, fpucw = 0x037F;
  w[-9] = uint64_t(mxcsr) | uint64_t(fpucw) << 32;
  return &w[-9];
}

void resume(Fiber& f) {
  t_current = &f;
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(&g_run.sched_fake, f.stack, kStackBytes);
#endif
  cuda_emu_switch(&g_run.sched_sp, f.sp);
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(g_run.sched_fake, nullptr, nullptr);
#endif
  t_current = nullptr;
}

std::string describe_deadlock() {
  int at_barrier = 0, at_warp = 0, warp_kind = 0;
  for (int i = 0; i < g_run.threads; ++i) {
    const Fiber& f = *g_run.fibers[i];
    if (f.done) continue;
    if (f.wait_kind == 0) ++at_barrier;
    else ++at_warp, warp_kind = f.wait_kind;
  }
  std::string s = "deadlock: " + std::to_string(g_run.threads - g_run.live) + " of " +
                  std::to_string(g_run.threads) + " threads have exited, " + std::to_string(at_barrier) +
                  " wait at __syncthreads";
  if (at_warp) s += ", " + std::to_string(at_warp) + " at " + kind_name(warp_kind) + " for lanes that never come";
  return s;
}

// The order a block's runnable threads are resumed in, each round of the scheduler: by thread index (the default),
// or with FLINT_CUDA_EMU_THREAD_ORDER=random[:SEED] warp by warp in a fresh random order of the warps each round
// (seeded, so a run repeats), each warp run as far as it goes before the next, its lanes in a random order too. A
// thread runs from one wait to its next, so in index order the warps advance in step and warp 0 always reaches a
// barrier-free write before warp 1 reaches a read of it; in random order a warp runs ahead of the others to the
// next __syncthreads, so about half the time a reader runs before its writer, and a missing barrier shows up as a
// wrong result. (Asynchronous copies and wgmmas then complete at issue: eager_async.)
struct ThreadOrder {
  bool random = false;
  std::mt19937_64 rng;
};
ThreadOrder& thread_order() {
  static ThreadOrder order = [] {
    ThreadOrder o;
    const char* e = std::getenv("FLINT_CUDA_EMU_THREAD_ORDER");
    if (e && std::strncmp(e, "random", 6) == 0 && (e[6] == '\0' || e[6] == ':')) {
      o.random = true;
      o.rng.seed(e[6] == ':' ? std::strtoull(e + 7, nullptr, 10) : 1);
    }
    return o;
  }();
  return order;
}

}  // namespace

bool run_block(const dim3& grid, const dim3& block, const uint3& block_idx, const std::function<void()>& body,
               void* dynamic_smem, std::string* fault, uint3* fault_thread) {
  const int n = int(block.x * block.y * block.z);
  BlockRun& r = g_run;
  while (int(r.fibers.size()) < n) {
    auto f = std::make_unique<Fiber>();
    f->stack = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (f->stack == MAP_FAILED) throw std::runtime_error("cuda_emu: cannot map a fiber stack");
    r.fibers.push_back(std::move(f));
  }
  r.block.idx = block_idx;
  r.block.dim = block;
  r.block.grid = grid;
  r.threads = r.live = n;
  r.bar_arrived = 0;
  r.warps.assign(size_t((n + 31) / 32), Warp{});
  r.body = &body;
  r.dynamic_smem = dynamic_smem;
  r.faulted = false;
  r.fault.clear();
  for (int i = 0; i < n; ++i) {
    Fiber& f = *r.fibers[i];
    f.idx = {unsigned(i) % block.x, unsigned(i) / block.x % block.y, unsigned(i) / (block.x * block.y)};
    f.block = &r.block;
    f.linear = i;
    f.done = false;
    f.wait_gen = nullptr;
    f.copies.clear();
    f.wgmmas.clear();
    f.sp = initial_stack(f.stack);
  }
  ThreadOrder& order = thread_order();
  const int num_warps = (n + 31) / 32;
  std::vector<int> warps(static_cast<size_t>(num_warps));
  for (int w = 0; w < num_warps; ++w) warps[size_t(w)] = w;
  std::vector<int> lane_order(32);
  for (int l = 0; l < 32; ++l) lane_order[size_t(l)] = l;
  auto runnable = [&](const Fiber& f) { return !f.done && !(f.wait_gen && *f.wait_gen == f.wait_val); };
  while (r.live > 0 && !r.faulted) {
    bool progress = false;
    if (!order.random) {
      for (int i = 0; i < n && !r.faulted; ++i) {
        Fiber& f = *r.fibers[size_t(i)];
        if (!runnable(f)) continue;
        f.wait_gen = nullptr;
        resume(f);
        progress = true;
      }
    } else {
      // Warp by warp in a fresh random order, each as far as it goes (to a barrier, the end, or a wait on another
      // warp) before the next starts; its lanes in a fresh random order at each pass.
      std::shuffle(warps.begin(), warps.end(), order.rng);
      for (int w : warps) {
        for (bool ran = true; ran && !r.faulted;) {
          ran = false;
          const int lanes = std::min(32, n - 32 * w);
          std::shuffle(lane_order.begin(), lane_order.begin() + lanes, order.rng);
          for (int k = 0; k < lanes && !r.faulted; ++k) {
            Fiber& f = *r.fibers[size_t(32 * w + lane_order[size_t(k)])];
            if (!runnable(f)) continue;
            f.wait_gen = nullptr;
            resume(f);
            ran = progress = true;
          }
        }
      }
    }
    if (!progress && !r.faulted) {
      r.faulted = true;
      r.fault = describe_deadlock();
      r.fault_thread = {0, 0, 0};
    }
  }
  if (!r.faulted) return true;
  *fault = r.fault;
  *fault_thread = r.fault_thread;
  return false;
}

int max_threads_per_block() { return kMaxThreads; }

void set_random_thread_order(bool on, uint64_t seed) {
  ThreadOrder& order = thread_order();
  order.random = on;
  order.rng.seed(seed);
}

// The faulting thread leaves its fiber at once (its frames are abandoned, as a faulted kernel's are; no exception
// unwinds across the fiber's stack) and the scheduler ends the block.
void device_fault(const std::string& what) {
  Fiber& f = cur();
  if (!g_run.faulted) {
    g_run.faulted = true;
    g_run.fault = what;
    g_run.fault_thread = f.idx;
  }
  leave_fiber(f);
}

void* dynamic_shared_base() {
  if (!g_run.dynamic_smem) device_fault("dynamic shared memory used by a kernel launched with none");
  return g_run.dynamic_smem;
}

unsigned lane_id() { return unsigned(cur().linear % 32); }

void sync_threads() {
  ++g_run.bar_arrived;
  if (g_run.bar_arrived == g_run.live) {
    g_run.bar_arrived = 0;
    ++g_run.bar_gen;
    return;
  }
  wait_for(&g_run.bar_gen, 0);
}

const unsigned char* warp_exchange(int kind, unsigned mask, const void* in, size_t bytes, CompleteFn complete) {
  Fiber& f = cur();
  Warp& w = g_run.warps[size_t(f.linear / 32)];
  const int lane = f.linear % 32;
  const int lanes_in_warp = std::min(32, g_run.threads - f.linear / 32 * 32);
  if (!((mask >> lane) & 1u)) device_fault(std::string(kind_name(kind)) + " by a lane outside its own mask");
  if (lanes_in_warp < 32 && (mask >> lanes_in_warp) != 0)
    device_fault(std::string(kind_name(kind)) + " names lanes past the block's last thread");
  if (w.arrived == 0) {
    w.kind = kind;
    w.mask = mask;
  } else if (w.kind != kind || w.mask != mask) {
    device_fault("warp collectives do not match: lane " + std::to_string(lane) + " is at " + kind_name(kind) +
                 " while other lanes of its warp are at " + kind_name(w.kind));
  }
  const uint64_t gen = w.gen;
  unsigned char* slots = &w.slots[gen & 1][0][0];
  if (bytes) std::memcpy(slots + 64 * lane, in, bytes);
  if (++w.arrived == std::popcount(mask)) {
    if (complete) complete(slots, mask);
    w.arrived = 0;
    ++w.gen;
    return slots;
  }
  wait_for(&w.gen, kind);
  return slots;
}

void sync_warp(unsigned mask) { warp_exchange(kSyncWarp, mask, nullptr, 0); }

// ---- The tensor-core step: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32. Lane (g = lane / 4, t = lane % 4)
// holds A (16×16, row-major) elements (g, 2t..2t+1) in a0, (g+8, 2t..) in a1, (g, 2t+8..) in a2, (g+8, 2t+8..) in
// a3; B (16×8) elements (k = 2t..2t+1, n = g) in b0 and (2t+8.., g) in b1; C and D elements (g, 2t), (g, 2t+1),
// (g+8, 2t), (g+8, 2t+1). The low half of a register is the lower column (A) or k (B). The products are exact in
// fp32; the emulator sums them and C in double and rounds once (the hardware's internal order is unspecified).
// The last lane to arrive computes the whole tile.
namespace {
struct MmaFrag {
  uint32_t a[4], b[2];
  float c[4];
};
float bf16_half(uint32_t reg, int high) { return __uint_as_float(high ? reg & 0xFFFF0000u : reg << 16); }

// Lane l's m16n8k16 A fragment (a0: row g, k 2t, 2t+1; a1: row g+8; a2: row g, k 2t+8, 2t+9; a3: row g+8) into
// a[row][k]: mma.sync's A, and each warp's 16 rows of a wgmma's A.
void unpack_a(double (&a)[16][16], int l, const uint32_t (&r)[4]) {
  const int g = l / 4, t = l % 4;
  for (int h = 0; h < 2; ++h) {
    a[g][2 * t + h] = bf16_half(r[0], h);
    a[g + 8][2 * t + h] = bf16_half(r[1], h);
    a[g][2 * t + 8 + h] = bf16_half(r[2], h);
    a[g + 8][2 * t + 8 + h] = bf16_half(r[3], h);
  }
}

// One k16 step of one output: c plus the 16 products, summed in double and rounded once.
float k16_step(float c, const double (&a_row)[16], const double (&b_col)[16]) {
  double s = c;
  for (int k = 0; k < 16; ++k) s += a_row[k] * b_col[k];
  return float(s);
}

void mma_complete(unsigned char* slots, unsigned) {
  MmaFrag f[32];
  for (int l = 0; l < 32; ++l) std::memcpy(&f[l], slots + 64 * l, sizeof f[l]);
  double a[16][16], b[8][16];  // a[row][k], b[col][k]
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    unpack_a(a, l, f[l].a);
    for (int h = 0; h < 2; ++h) {
      b[g][2 * t + h] = bf16_half(f[l].b[0], h);
      b[g][2 * t + 8 + h] = bf16_half(f[l].b[1], h);
    }
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    float d[4];
    for (int r = 0; r < 4; ++r) d[r] = k16_step(f[l].c[r], a[g + (r >= 2 ? 8 : 0)], b[2 * t + (r & 1)]);
    std::memcpy(slots + 64 * l, d, sizeof d);
  }
}
}  // namespace

void mma_bf16_m16n8k16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  const MmaFrag mine{{a0, a1, a2, a3}, {b0, b1}, {d[0], d[1], d[2], d[3]}};
  const unsigned char* slots = warp_exchange(kMma, 0xFFFFFFFFu, &mine, sizeof mine, mma_complete);
  std::memcpy(d, slots + 64 * lane_id(), sizeof d);
}

// ---- ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i .. 8i+7 give the addresses of rows 0..7 of
// matrix i (16 bytes each, 16-byte aligned); lane l receives in r[i] elements (l / 4, 2(l % 4)) and (l / 4,
// 2(l % 4) + 1) of matrix i, or with .trans elements (2(l % 4), l / 4) and (2(l % 4) + 1, l / 4). All lanes' rows
// are read when the last lane arrives.
namespace {
template <bool kTrans>
void ldmatrix_complete(unsigned char* slots, unsigned) {
  const uint16_t* rows[32];
  for (int l = 0; l < 32; ++l) std::memcpy(&rows[l], slots + 64 * l, sizeof(void*));
  uint32_t out[32][4];
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      uint16_t lo, hi;
      if (kTrans) {
        lo = rows[8 * i + 2 * (l % 4)][l / 4];
        hi = rows[8 * i + 2 * (l % 4) + 1][l / 4];
      } else {
        lo = rows[8 * i + l / 4][2 * (l % 4)];
        hi = rows[8 * i + l / 4][2 * (l % 4) + 1];
      }
      out[l][i] = uint32_t(lo) | uint32_t(hi) << 16;
    }
  for (int l = 0; l < 32; ++l) std::memcpy(slots + 64 * l, out[l], sizeof out[l]);
}
}  // namespace

void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row, bool trans) {
  if (reinterpret_cast<uintptr_t>(smem_row) % 16 != 0) device_fault("ldmatrix: a row address not 16-byte aligned");
  const unsigned char* slots = warp_exchange(kLdmatrix, 0xFFFFFFFFu, &smem_row, sizeof smem_row,
                                             trans ? ldmatrix_complete<true> : ldmatrix_complete<false>);
  std::memcpy(r, slots + 64 * lane_id(), sizeof r);
}

// ---- cp.async.cg.shared.global (16 bytes) and its groups. A copy lands at the latest moment the PTX ISA allows:
// when a cp.async.wait_group that covers it returns (or when its thread exits), so a read that lacks its wait sees
// the stale bytes.
// In random thread order (ThreadOrder) the asynchronous operations complete at issue instead: a cp.async lands,
// and a wgmma reads shared memory and adds into its accumulators, when issued: the earliest moment the PTX ISA
// allows, where the default is the latest (their wait). So a copy that refills a tile another warp may still be
// reading (its barrier missing), or a wgmma issued before the barrier that completes its tile, computes wrong
// numbers there; a read that lacks its wait is the default order's to catch.
bool eager_async() { return thread_order().random; }

void issue_copy(const Copy& c) {
  if (eager_async()) perform(c);
  else cur().copies.open.push_back(c);
}

void cp_async16(void* smem_dst, const void* src, bool fill) {
  if (reinterpret_cast<uintptr_t>(smem_dst) % 16 != 0 || (fill && reinterpret_cast<uintptr_t>(src) % 16 != 0))
    device_fault("cp.async: a 16-byte copy with an address not 16-byte aligned");
  issue_copy({smem_dst, src, fill, 16});
}

void cp_async4(void* smem_dst, const void* src, bool fill) {
  if (reinterpret_cast<uintptr_t>(smem_dst) % 4 != 0 || (fill && reinterpret_cast<uintptr_t>(src) % 4 != 0))
    device_fault("cp.async: a 4-byte copy with an address not 4-byte aligned");
  issue_copy({smem_dst, src, fill, 4});
}

void prefetch_l2(const void* p, uint32_t bytes) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0 || bytes % 16 != 0)
    device_fault("cp.async.bulk.prefetch.L2: address or size not a multiple of 16");
  if (!device_range(p, bytes)) device_fault("cp.async.bulk.prefetch.L2: the range is not inside one device allocation");
}

void cp_async_commit() { cur().copies.commit(); }

void cp_async_wait(int pending) { cur().copies.wait(pending, [](const Copy& c) { perform(c); }); }


// ---- wgmma.mma_async m64n128k16 and m64n64k16 (bf16, fp32 accumulators, A from registers, B K-major with the
// 128-byte swizzle), with wgmma.commit_group and wgmma.wait_group. A wgmma runs at the latest moment the PTX ISA allows:
// when a wait_group that covers it returns, reading shared memory and adding into the accumulators then; so a
// kernel that reads its accumulators or overwrites the tile before waiting computes wrong numbers here. Each warp
// computes its own 16 rows (the A fragment its lanes hold) against the whole tile, with mma.sync's arithmetic
// (the products summed in double onto the accumulator in k order, rounded once), so a wgmma and the two m16n8k16
// steps over the same operands give the same bits here. The warpgroup's four warps are not checked to be aligned.
uint32_t shared_offset(const void* p) {
  const auto* base = static_cast<const unsigned char*>(dynamic_shared_base());
  const auto* q = static_cast<const unsigned char*>(p);
  if (q < base || q - base >= (ptrdiff_t(1) << 18))
    device_fault("wgmma: a descriptor for memory outside the launch's dynamic shared memory");
  return uint32_t(q - base);
}

namespace {
void wgmma_complete(unsigned char* slots, unsigned) {
  WgmmaOp op[32];
  for (int l = 0; l < 32; ++l) std::memcpy(&op[l], slots + 64 * l, sizeof op[l]);
  const uint64_t desc = op[0].desc;
  for (int l = 1; l < 32; ++l)
    if (op[l].desc != desc) device_fault("wgmma: the lanes of a warp gave different B descriptors");
  if ((desc >> 62) != 1) device_fault("wgmma: only the 128-byte swizzle layout is emulated");
  const uint32_t start = uint32_t(desc & 0x3FFF) << 4, stride = uint32_t((desc >> 32) & 0x3FFF) << 4;
  const auto* smem = static_cast<const unsigned char*>(dynamic_shared_base());
  const int n_cols = op[0].n;
  for (int l = 1; l < 32; ++l)
    if (op[l].n != n_cols) device_fault("wgmma: the lanes of a warp gave different shapes");
  double a[16][16], b[128][16];  // a[row][k], b[column][k]
  for (int l = 0; l < 32; ++l) unpack_a(a, l, op[l].a);
  for (int n = 0; n < n_cols; ++n)
    for (int k = 0; k < 16; ++k) {
      const uint32_t logical = start + uint32_t(n / 8) * stride + uint32_t(n % 8) * 128 + uint32_t(2 * k);
      const uint32_t physical = logical ^ (((logical >> 7) & 7u) << 4);
      uint16_t v;
      std::memcpy(&v, smem + physical, 2);
      b[n][k] = __uint_as_float(uint32_t(v) << 16);
    }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int j = 0; j < n_cols / 8; ++j)
      for (int r = 0; r < 4; ++r)
        op[l].d[4 * j + r] = k16_step(op[l].d[4 * j + r], a[g + (r >= 2 ? 8 : 0)], b[8 * j + 2 * t + (r & 1)]);
  }
}
}  // namespace

namespace {
void issue_wgmma(const WgmmaOp& op) {  // at its wait, or at once in random thread order (eager_async)
  if (eager_async()) warp_exchange(kWgmma, 0xFFFFFFFFu, &op, sizeof op, wgmma_complete);
  else cur().wgmmas.open.push_back(op);
}
}  // namespace

void wgmma_bf16_m64n128k16(float (&d)[64], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint64_t desc_b) {
  issue_wgmma({{a0, a1, a2, a3}, d, desc_b, 128});
}

void wgmma_bf16_m64n64k16(float (&d)[32], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint64_t desc_b) {
  issue_wgmma({{a0, a1, a2, a3}, d, desc_b, 64});
}

void wgmma_commit() { cur().wgmmas.commit(); }

void wgmma_wait(int pending) {
  cur().wgmmas.wait(pending, [](const WgmmaOp& op) {
    warp_exchange(kWgmma, 0xFFFFFFFFu, &op, sizeof op, wgmma_complete);
  });
}
}  // namespace cuda_emu

namespace {
// The lanes of `mask` whose exchanged value satisfies `keep`: a vote.
template <class T, class Keep>
unsigned vote(unsigned mask, T mine, Keep keep) {
  const unsigned char* slots = cuda_emu::warp_exchange(cuda_emu::kVote, mask, &mine, sizeof mine);
  unsigned out = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l) & 1u) {
      T v;
      std::memcpy(&v, slots + 64 * l, sizeof v);
      if (keep(v)) out |= 1u << l;
    }
  return out;
}
}  // namespace

unsigned __ballot_sync(unsigned mask, int predicate) {
  return vote(mask, int(predicate != 0), [](int v) { return v != 0; });
}
int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
unsigned __match_any_sync(unsigned mask, unsigned value) {
  return vote(mask, value, [value](unsigned v) { return v == value; });
}
int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }
