// engine_bench: the serving engine's speed on random-weight models of real shapes (model/model_shapes.h), through
// the real serving path (Engine: scheduler + backend + sampling: on the GPU by the backend, on the CPU by the engine),
// on --device cpu or cuda. Per model: seconds
// to ready (backend built: weights uploaded, decode graphs captured; then the Engine), decode tokens/s at each
// batch with its % of the bandwidth roofline, prefill tokens/s of one sequence. Prints a table; --json PATH.
//
//   engine_bench [--device auto|cpu|cuda] [--models LIST] [--layers N] [--batches LIST] [--prefill LIST]
//                [--decode-steps N] [--prompt N] [--threads N] [--max-context N] [--seed S] [--json PATH] [--quick]
//                [--profile] [--sampling greedy|chat]
//
// Decode: B requests (distinct random prompts of --prompt tokens, greedy, or --sampling chat: temperature 0.7, top-k
// 50, top-p 0.9, each request its own seed; ignore_eos) go to one Engine at once. A
// wrapper around the backend stamps every step (forward entry and exit, sequences, tokens, summed kv_len); after
// the requests end, the window is N steps of the longest run in which all B sequences decode one token each (so
// every step of it is a pure batch-B decode), skipping the first 4. Time = entry of step k+N - entry of step k:
// N whole engine steps (schedule, forward and sampling, stream pushes). tok/s = B·N / time.
// Roofline of a step = (weight bytes + KV bytes) / bandwidth, where weight bytes = every tensor a decode step reads
// once (all matrices, norms, biases, the LM head; not the embedding table unless it is the tied LM head), as the
// backend stores them (bf16 here), and KV bytes = Σ kv_len over the step's sequences × layers × kv_heads ×
// head_dim × 2 (K, V) × element size (CUDA bf16: 2, CPU fp32: 4). % of roofline = Σ roofline times / time; the
// forward-alone % divides by the time inside Backend::forward (or forward_sample: the CUDA backend samples on the
// device, only ids come back) instead; the rest is the engine's host work (scheduling, stream pushes; on the CPU
// backend, sampling every row's fp32 logits on the engine thread).
// Bandwidth: measured in the same process: CUDA the median of timed device-to-device cudaMemcpy of 1 GiB (bytes =
// 2 × buffer: read and write), the CPU the fastest of 5 reads of 256 MiB split over the backend's threads (bytes =
// buffer).
// Prefill: one request of L tokens, max_tokens 1 (chunked by the scheduler's 2048-token budget); tok/s = L / its
// time to first token, median of the timed runs after a warm-up, a fresh prompt each run (no prefix-cache hits).
// --profile (CUDA): after each decode batch, the same batch decodes again with every pure batch-B step profiled
// op by op (model/cuda_op_profiler.h: eager, held until queued, CUDA events around each op): GPU µs per step per
// op, printed and in the JSON under the batch's "profile".
// A model, batch or prefill length that fails is printed and recorded with its error; the rest still run, the JSON
// is written, and the exit status is 1.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/op_bytes.h"
#include "bench/roofline.h"
#include "common/error.h"
#include "engine/engine.h"
#include "model/backend_factory.h"
#include "model/model_shapes.h"
#include "model/random_weights.h"
#ifdef FLINT_HAVE_CUDA
#include "model/cuda_backend.h"
#endif

namespace {

using flint::fail;
using flint::bench::decode_weight_bytes;
using flint::bench::kv_bytes_per_token;
using flint::bench::measure_cpu_read_gbps;
#ifdef FLINT_HAVE_CUDA
using flint::bench::cuda_check;
using flint::bench::measure_cuda_copy_gbps;
#endif
using SteadyClock = std::chrono::steady_clock;

double seconds_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Options {
  std::string device = "auto";
  std::vector<std::string> models = {"smollm2-135m", "llama-3.2-1b", "qwen2.5-1.5b", "qwen2.5-7b"};
  int32_t layers = 0;  // 0: each shape's own
  std::vector<int32_t> batches = {1, 8, 32, 128, 256};
  std::vector<int32_t> prefill = {512, 4096};
  int32_t decode_steps = 64, prompt = 32, threads = 0, prefill_runs = 3;
  int32_t max_context = 8192;  // caps each model's context, as flintd --max-context does (0: the model's own)
  uint64_t seed = flint::kDefaultRandomWeightSeed;
  std::string json_path;
  bool quick = false;
  bool profile = false;
  std::string sampling = "greedy";  // --sampling: greedy, or chat (temperature 0.7, top-k 50, top-p 0.9, seeded)
};

// A decode request's sampling under --sampling (the prefill runs stay greedy: one token each).
void set_sampling(flint::EngineRequest& r, const Options& opt, uint64_t seed) {
  r.sampling.temperature = 0;
  if (opt.sampling == "chat") r.sampling.temperature = 0.7f, r.sampling.top_k = 50, r.sampling.top_p = 0.9f, r.sampling.seed = seed;
}

// What one step of the engine ran and when: stamped by StepRecorder on the engine thread.
struct StepRecord {
  int64_t entry_ns = 0, exit_ns = 0;  // forward() entry and return, steady clock
  int32_t num_seqs = 0, num_tokens = 0;
  int64_t sum_kv_len = 0;  // Σ kv_len: the KV tokens the step's attention reads
};

// The backend the engine runs, with every forward() stamped into a preallocated array (no allocation, no lock
// on the engine thread; the reader takes count() with acquire and reads the records below it).
class StepRecorder : public flint::Backend {
 public:
  explicit StepRecorder(flint::Backend& inner) : inner_(inner), records_(1 << 16) {}
  void forward(const flint::StepPlan& plan, float* logits) override {
    if (before_step) before_step(plan);
    const int64_t t0 = SteadyClock::now().time_since_epoch().count();
    inner_.forward(plan, logits);
    record(plan, t0);
  }
  // A backend that samples on its device (CUDA) keeps doing so through the recorder: the step is timed with its
  // sampling, and only ids come back, as when flintd serves.
  bool samples_on_device() const override { return inner_.samples_on_device(); }
  bool decode_matches_prefill() const override { return inner_.decode_matches_prefill(); }
  void forward_sample(const flint::StepPlan& plan, const flint::cpu::SampleBatch& batch, int32_t* token_ids,
                      float* logprobs) override {
    if (before_step) before_step(plan);
    const int64_t t0 = SteadyClock::now().time_since_epoch().count();
    inner_.forward_sample(plan, batch, token_ids, logprobs);
    record(plan, t0);
  }
  const flint::ModelConfig& config() const override { return inner_.config(); }
  int32_t block_size() const override { return inner_.block_size(); }
  int32_t num_kv_blocks() const override { return inner_.num_kv_blocks(); }
  void set_observer(flint::LayerObserver observer) override { inner_.set_observer(std::move(observer)); }

  // PRECOND: the engine is idle (no request running).
  void reset() { count_.store(0, std::memory_order_release); }
  // Called on the engine thread before each step (--profile turns the op profiler on for the steps it times). Set
  // while the engine is idle.
  std::function<void(const flint::StepPlan&)> before_step;
  // The records so far; call when the engine is idle for a stable view.
  std::vector<StepRecord> records() const {
    const size_t n = count_.load(std::memory_order_acquire);
    return {records_.begin(), records_.begin() + static_cast<ptrdiff_t>(n)};
  }

 private:
  void record(const flint::StepPlan& plan, int64_t t0) {
    const size_t i = count_.load(std::memory_order_relaxed);
    if (i >= records_.size()) return;  // full: later steps are not recorded (reset() between runs)
    StepRecord& r = records_[i];
    r.entry_ns = t0;
    r.exit_ns = SteadyClock::now().time_since_epoch().count();
    r.num_seqs = plan.num_seqs();
    r.num_tokens = plan.num_tokens();
    r.sum_kv_len = 0;
    for (int32_t kv : plan.kv_lens) r.sum_kv_len += kv;
    count_.store(i + 1, std::memory_order_release);
  }

  flint::Backend& inner_;
  std::vector<StepRecord> records_;
  std::atomic<size_t> count_{0};
};

std::vector<int32_t> random_prompt(int32_t len, int32_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, vocab - 1);
  std::vector<int32_t> p(size_t(len), 0);
  for (auto& t : p) t = id(rng);
  return p;
}

// Submits every request, then waits for each final event; returns the finals. Throws when one is refused or ends
// with an error.
std::vector<flint::StreamFinal> run_requests(flint::Engine& engine, std::vector<flint::EngineRequest> requests) {
  std::vector<std::shared_ptr<flint::RequestStream>> streams;
  for (auto& r : requests) {
    flint::SubmitResult s = engine.submit(std::move(r));
    if (!s.status.ok()) fail("submit: ", flint::to_string(s.status.code), ": ", s.status.message);
    streams.push_back(s.stream);
  }
  std::vector<flint::StreamFinal> finals;
  for (auto& stream : streams) {
    for (;;) {
      std::optional<flint::StreamEvent> e = stream->pop(std::chrono::minutes(5));
      if (!e) fail("a request produced nothing for 5 minutes");
      if (auto* f = std::get_if<flint::StreamFinal>(&*e)) {
        if (!f->status.ok()) fail("a request ended with ", flint::to_string(f->status.code), ": ", f->status.message);
        finals.push_back(*f);
        break;
      }
    }
  }
  return finals;
}

struct DecodeResult {
  int32_t batch = 0, steps = 0;
  double seconds = 0, tok_s = 0, step_ms = 0, forward_ms = 0, roofline_s = 0, pct_roofline = 0, mean_kv_len = 0;
  double pct_roofline_forward = 0;  // the roofline over the time inside Backend::forward only
  uint64_t kv_bytes_per_step = 0;
};

constexpr int32_t kWarmSteps = 4;

DecodeResult measure_decode(flint::Engine& engine, StepRecorder& rec, const flint::ModelConfig& config, int32_t batch,
                            const Options& opt, uint64_t weight_bytes, uint64_t kv_per_token, double gbps,
                            uint64_t prompt_seed) {
  // The last prompt's prefill ends ceil(B·P / budget) steps after the first's: all B decode together from then
  // until the first request ends, so max_tokens covers that spread, the warm-up and the window.
  const int32_t spread = (batch * opt.prompt + 2047) / 2048 + 1;
  const int32_t max_tokens = kWarmSteps + opt.decode_steps + spread + 4;
  std::vector<flint::EngineRequest> requests(static_cast<size_t>(batch));
  for (int32_t i = 0; i < batch; ++i) {
    auto& r = requests[size_t(i)];
    r.prompt_token_ids = random_prompt(opt.prompt, config.vocab_size, prompt_seed + uint64_t(i));
    set_sampling(r, opt, prompt_seed + uint64_t(i));
    r.stopping.max_tokens = max_tokens;
    r.stopping.ignore_eos = true;
  }
  rec.reset();
  run_requests(engine, std::move(requests));
  const std::vector<StepRecord> steps = rec.records();
  // The longest run of pure batch-B decode steps.
  size_t best_start = 0, best_len = 0;
  for (size_t i = 0; i < steps.size();) {
    size_t j = i;
    while (j < steps.size() && steps[j].num_seqs == batch && steps[j].num_tokens == batch) ++j;
    if (j - i > best_len) best_start = i, best_len = j - i;
    i = std::max(j, i + 1);
  }
  const size_t k = best_start + kWarmSteps, n = size_t(opt.decode_steps);
  // Entry of step k+n closes the window: it must exist (any kind of step).
  if (best_len < kWarmSteps + n || k + n >= steps.size())
    fail("batch ", batch, ": only ", best_len, " steps decoded all ", batch, " sequences together of ", steps.size(),
         " recorded (need ", kWarmSteps + n, "); is max_num_seqs below the batch?");
  DecodeResult d;
  d.batch = batch;
  d.steps = int32_t(n);
  d.seconds = double(steps[k + n].entry_ns - steps[k].entry_ns) / 1e9;
  double forward_s = 0, kv_sum = 0;
  for (size_t i = k; i < k + n; ++i) {
    const uint64_t kv_bytes = uint64_t(steps[i].sum_kv_len) * kv_per_token;
    d.roofline_s += double(weight_bytes + kv_bytes) / (gbps * 1e9);
    forward_s += double(steps[i].exit_ns - steps[i].entry_ns) / 1e9;
    kv_sum += double(steps[i].sum_kv_len);
  }
  d.tok_s = double(batch) * double(n) / d.seconds;
  d.step_ms = d.seconds / double(n) * 1e3;
  d.forward_ms = forward_s / double(n) * 1e3;
  d.mean_kv_len = kv_sum / double(n) / double(batch);
  d.kv_bytes_per_step = uint64_t(kv_sum / double(n)) * kv_per_token;
  d.pct_roofline = 100.0 * d.roofline_s / d.seconds;
  d.pct_roofline_forward = 100.0 * d.roofline_s / forward_s;
  return d;
}

struct PrefillResult {
  int32_t tokens = 0, runs = 0;
  double seconds = 0, tok_s = 0;
};

PrefillResult measure_prefill(flint::Engine& engine, const flint::ModelConfig& config, int32_t len, int32_t runs,
                              uint64_t prompt_seed) {
  std::vector<double> times;
  for (int32_t r = 0; r <= runs; ++r) {  // run 0 warms up
    flint::EngineRequest req;
    req.prompt_token_ids = random_prompt(len, config.vocab_size, prompt_seed + uint64_t(r));
    req.sampling.temperature = 0;
    req.stopping.max_tokens = 1;
    req.stopping.ignore_eos = true;
    std::vector<flint::EngineRequest> one;
    one.push_back(std::move(req));
    const flint::StreamFinal f = run_requests(engine, std::move(one)).front();
    if (!f.timings.time_to_first_token) fail("prefill of ", len, " tokens: no first token");
    if (r > 0) times.push_back(std::chrono::duration<double>(*f.timings.time_to_first_token).count());
  }
  PrefillResult p;
  p.tokens = len;
  p.runs = runs;
  p.seconds = median(times);
  p.tok_s = double(len) / p.seconds;
  return p;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<int32_t> split_ints(const std::string& flag, const std::string& s) {
  std::vector<int32_t> out;
  for (const std::string& item : split(s)) {
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (*end != '\0' || v < 1 || v > (1 << 20)) fail(flag, ": \"", item, "\" is not a positive count");
    out.push_back(int32_t(v));
  }
  if (out.empty()) fail(flag, ": give at least one value");
  return out;
}

int32_t parse_count(const std::string& flag, const std::string& s) { return split_ints(flag, s).at(0); }

constexpr const char* kUsage =
    "usage: engine_bench [--device auto|cpu|cuda] [--models LIST] [--layers N] [--batches LIST] [--prefill LIST]\n"
    "                    [--decode-steps N] [--prompt N] [--threads N] [--max-context N] [--seed S] [--json PATH]\n"
    "                    [--quick] [--profile] [--sampling greedy|chat]\n"
    "  --models: comma-separated shape names (flint-run --list-shapes); default the four of issue 6\n"
    "  --max-context: tokens per sequence, as flintd's flag (default 8192; 0: the model's own)\n"
    "  --quick: batches 1,8; prefill 512; 16 decode steps; 1 timed prefill run (flags given after it win)\n"
    "  --profile: CUDA: each decode batch again, op by op (GPU us per step per op)\n"
    "  --sampling: decode greedily (default) or as a chat client does: temperature 0.7, top-k 50, top-p 0.9\n";

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) fail(a, " needs a value");
      return std::string(argv[++i]);
    };
    if (a == "--device") o.device = next();
    else if (a == "--models") o.models = split(next());
    else if (a == "--layers") o.layers = parse_count(a, next());
    else if (a == "--batches") o.batches = split_ints(a, next());
    else if (a == "--prefill") o.prefill = split_ints(a, next());
    else if (a == "--decode-steps") o.decode_steps = parse_count(a, next());
    else if (a == "--prompt") o.prompt = parse_count(a, next());
    else if (a == "--threads") o.threads = parse_count(a, next());
    else if (a == "--max-context") {
      const std::string v = next();
      o.max_context = v == "0" ? 0 : parse_count(a, v);
    }
    else if (a == "--seed") o.seed = std::strtoull(next().c_str(), nullptr, 0);
    else if (a == "--json") o.json_path = next();
    else if (a == "--profile") o.profile = true;
    else if (a == "--sampling") {
      o.sampling = next();
      if (o.sampling != "greedy" && o.sampling != "chat") fail("--sampling: greedy or chat, not \"", o.sampling, "\"");
    }
    else if (a == "--quick") {
      o.quick = true;
      o.batches = {1, 8};
      o.prefill = {512};
      o.decode_steps = 16;
      o.prefill_runs = 1;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else {
      fail("unknown argument ", a, "\n", kUsage);
    }
  }
  if (o.models.empty()) fail("--models: give at least one shape");
  for (const std::string& m : o.models) flint::find_model_shape(m);  // an unknown name lists the known ones
  return o;
}

using nlohmann::json;

struct RunContext {
  explicit RunContext(const Options& o) : opt(o) {}
  const Options& opt;
  std::string device;
  double gbps = 0;
  int32_t max_batch = 0, max_prefill = 0;
  uint64_t prompt_seed = 1;  // advanced per request: every prompt is new (no prefix-cache hits)
};

#ifdef FLINT_HAVE_CUDA
// --profile: `batch` requests decoding together once more, every pure batch-B decode step profiled op by op; the
// means per step, printed (largest first) and returned as JSON.
json profile_decode(flint::Engine& engine, StepRecorder& rec, flint::CudaBackend& cuda,
                    const flint::ModelConfig& config, int32_t batch, const Options& opt, uint64_t prompt_seed,
                    double gbps) {
  cuda.reset_op_profile();
  rec.reset();
  rec.before_step = [&cuda, batch](const flint::StepPlan& plan) {
    cuda.set_op_profiling(plan.num_seqs() == batch && plan.num_tokens() == batch);
  };
  std::vector<flint::EngineRequest> requests(static_cast<size_t>(batch));
  for (int32_t i = 0; i < batch; ++i) {
    auto& r = requests[size_t(i)];
    r.prompt_token_ids = random_prompt(opt.prompt, config.vocab_size, prompt_seed + uint64_t(i));
    set_sampling(r, opt, prompt_seed + uint64_t(i));
    r.stopping.max_tokens = 12 + (batch * opt.prompt + 2047) / 2048;
    r.stopping.ignore_eos = true;
  }
  try {
    run_requests(engine, std::move(requests));
  } catch (...) {
    rec.before_step = nullptr;
    cuda.set_op_profiling(false);
    throw;
  }
  rec.before_step = nullptr;
  cuda.set_op_profiling(false);
  const flint::OpProfile& p = cuda.op_profile();
  if (p.steps == 0) fail("profile: no step decoded all ", batch, " sequences together");
  std::vector<flint::OpTime> ops = p.ops;
  std::stable_sort(ops.begin(), ops.end(), [](const flint::OpTime& a, const flint::OpTime& b) { return a.ms > b.ms; });
  const double n = double(p.steps), step_us = p.step_ms * 1e3 / n;
  double sum_us = 0;
  for (const flint::OpTime& o : ops) sum_us += o.ms * 1e3 / n;
  // The profiled steps' mean Σ kv_len (the steps in which all `batch` sequences decoded), for attention's bytes.
  double kv_sum = 0, kv_steps = 0;
  for (const StepRecord& r : rec.records())
    if (r.num_seqs == batch && r.num_tokens == batch) kv_sum += double(r.sum_kv_len), kv_steps += 1;
  const double mean_kv = kv_steps > 0 ? kv_sum / kv_steps : 0;
  std::printf("  profile batch %3d: %lld eager steps, held until queued, events around each op: GPU %.1f us per "
              "step, ops %.1f us, the rest (copies, gaps) %.1f us\n",
              batch, static_cast<long long>(p.steps), step_us, sum_us, step_us - sum_us);
  std::printf("    %-28s %10s %10s %8s %9s %8s %7s\n", "op", "calls/step", "us/step", "% step", "MB/step", "GB/s",
              "% copy");
  json rows = json::array();
  for (const flint::OpTime& o : ops) {
    const double us = o.ms * 1e3 / n, bytes = flint::bench::op_floor_bytes(o.op, config, mean_kv);
    json row = {{"op", o.op}, {"calls_per_step", double(o.calls) / n}, {"us_per_step", us}};
    std::printf("    %-28s %10.1f %10.1f %7.1f%%", o.op.c_str(), double(o.calls) / n, us, 100.0 * us / step_us);
    if (bytes > 0 && us > 0) {  // the floor's bytes over the op's time: how near the op runs to the copy bandwidth
      const double op_gbps = bytes / (us * 1e3);
      std::printf(" %9.1f %8.0f %6.1f%%", bytes / 1e6, op_gbps, 100.0 * op_gbps / gbps);
      row["floor_bytes"] = bytes, row["gbps"] = op_gbps, row["pct_copy"] = 100.0 * op_gbps / gbps;
    }
    std::printf("\n");
    rows.push_back(row);
  }
  return {{"steps", p.steps}, {"step_us", step_us}, {"ops_us", sum_us}, {"mean_sum_kv_len", mean_kv}, {"ops", rows}};
}
#endif

// One model shape: start-up, decode at every batch, prefill at every length. A batch or length that fails is
// recorded with its error and the rest go on; a failure to build the model throws.
json bench_model(const std::string& name, RunContext& ctx) {
  const Options& opt = ctx.opt;
  flint::RandomModelSpec spec;
  spec.shape = name;
  spec.num_layers = opt.layers;
  spec.seed = opt.seed;
  const auto t_gen = SteadyClock::now();
  flint::LoadedModel model = flint::load_random_model(spec, opt.threads);
  const double gen_s = seconds_since(t_gen);
  // As flintd --max-context: on CUDA the block table's width, a graph's attention grid and the attention
  // workspace are sized for this context (model/cuda_backend.h).
  if (opt.max_context > 0) model.config.max_context = std::min(model.config.max_context, opt.max_context);

  flint::BackendOptions bo;
  bo.device = ctx.device;
  bo.num_threads = opt.threads;
  bo.log = false;
  // Blocks for the largest batch's sequences and the longest prefill, at the most they ever hold.
  const int32_t per_seq = opt.prompt + kWarmSteps + opt.decode_steps + (ctx.max_batch * opt.prompt + 2047) / 2048 + 6;
  if (model.config.max_context < std::max(ctx.max_prefill + 1, per_seq))
    fail("a context of ", model.config.max_context, " tokens is too short for these runs (--max-context)");
  const int32_t need_blocks = std::max(ctx.max_batch * ((per_seq + bo.block_size - 1) / bo.block_size),
                                       (ctx.max_prefill + bo.block_size) / bo.block_size) + 1;
  if (ctx.device == "cpu") bo.num_kv_blocks = need_blocks;  // CUDA: the default budget, as flintd sizes it
  const auto t_ready = SteadyClock::now();
  flint::MadeBackend made = flint::make_backend(model.config, model.weights, bo);
  const double backend_s = seconds_since(t_ready);
  if (made.backend->num_kv_blocks() < need_blocks)
    fail("the KV cache has ", made.backend->num_kv_blocks(), " blocks, the runs need ", need_blocks);
  StepRecorder rec(*made.backend);
  flint::EngineConfig ec;
  ec.scheduler.max_num_seqs = ctx.max_batch;
  flint::Engine engine(rec, nullptr, ec);  // destroyed before rec and the backend it runs on
  const double ready_s = seconds_since(t_ready);

  const uint64_t weight_bytes = decode_weight_bytes(model.weights);
  const uint64_t kv_per_token = kv_bytes_per_token(model.config, made.device);
  std::printf("\n%s: %s\n  %s\n  weights %.3f GB read per decode step; KV %.1f KB per token; random weights "
              "made in %.2f s; backend built in %.2f s (graph capture %.2f s); ready (engine up) in %.2f s\n",
              spec.to_string().c_str(), model.config.describe().c_str(), made.description.c_str(),
              double(weight_bytes) / 1e9, double(kv_per_token) / 1e3, gen_s, backend_s, made.graph_capture_seconds,
              ready_s);
  std::fflush(stdout);
  json m = {{"model", name},
            {"spec", spec.to_string()},
            {"layers", model.config.num_layers},
            {"max_context", model.config.max_context},
            {"shape_layers", flint::find_model_shape(name).config.num_layers},
            {"backend", made.description},
            {"weight_bytes", weight_bytes},
            {"kv_bytes_per_token", kv_per_token},
            {"random_weights_s", gen_s},
            {"backend_build_s", backend_s},
            {"graph_capture_s", made.graph_capture_seconds},
            {"ready_s", ready_s},
            {"decode", json::array()},
            {"prefill", json::array()}};
  for (int32_t b : opt.batches) {
    try {
      const DecodeResult d = measure_decode(engine, rec, model.config, b, opt, weight_bytes, kv_per_token, ctx.gbps,
                                            ctx.prompt_seed);
      std::printf("  decode batch %3d: %10.1f tok/s  %8.3f ms/step (forward %.3f)  %5.1f%% of roofline "
                  "(forward alone %.1f%%)\n",
                  b, d.tok_s, d.step_ms, d.forward_ms, d.pct_roofline, d.pct_roofline_forward);
      m["decode"].push_back({{"batch", d.batch},
                             {"steps", d.steps},
                             {"seconds", d.seconds},
                             {"tok_s", d.tok_s},
                             {"step_ms", d.step_ms},
                             {"forward_ms", d.forward_ms},
                             {"mean_kv_len", d.mean_kv_len},
                             {"kv_bytes_per_step", d.kv_bytes_per_step},
                             {"roofline_tok_s", double(d.batch) * double(d.steps) / d.roofline_s},
                             {"pct_roofline", d.pct_roofline},
                             {"pct_roofline_forward", d.pct_roofline_forward}});
#ifdef FLINT_HAVE_CUDA
      if (opt.profile) {
        auto* cuda = dynamic_cast<flint::CudaBackend*>(made.backend.get());
        if (!cuda) fail("--profile needs the CUDA backend");
        ctx.prompt_seed += uint64_t(b);
        m["decode"].back()["profile"] = profile_decode(engine, rec, *cuda, model.config, b, opt, ctx.prompt_seed, ctx.gbps);
      }
#endif
    } catch (const std::exception& e) {
      std::printf("  decode batch %3d: FAILED: %s\n", b, e.what());
      m["decode"].push_back({{"batch", b}, {"error", e.what()}});
    }
    ctx.prompt_seed += uint64_t(b);
    std::fflush(stdout);
  }
  for (int32_t len : opt.prefill) {
    try {
      const PrefillResult p = measure_prefill(engine, model.config, len, opt.prefill_runs, ctx.prompt_seed);
      std::printf("  prefill %5d tokens: %10.1f tok/s  (%.3f s to first token)\n", len, p.tok_s, p.seconds);
      m["prefill"].push_back({{"tokens", p.tokens}, {"runs", p.runs}, {"seconds", p.seconds}, {"tok_s", p.tok_s}});
    } catch (const std::exception& e) {
      std::printf("  prefill %5d tokens: FAILED: %s\n", len, e.what());
      m["prefill"].push_back({{"tokens", len}, {"error", e.what()}});
    }
    ctx.prompt_seed += uint64_t(opt.prefill_runs + 1);
    std::fflush(stdout);
  }
  return m;
}

// The tables from the JSON, as the "## summary" block gpu-check.sh repeats at the end; returns the errors counted.
int print_summary(const json& out) {
  int errors = 0;
  auto num = [](const json& j, const char* key) { return j.contains(key) ? j[key].get<double>() : 0.0; };
  std::printf("\n## summary engine_bench (%s, %.0f GB/s measured; decode via the Engine)\n",
              out["device"].get<std::string>().c_str(), out["bandwidth_gbps"].get<double>());
  std::printf("%-14s %6s %12s %10s %10s %7s %8s\n", "model", "batch", "tok/s", "step_ms", "fwd_ms", "%roof",
              "%roof_fw");
  for (const json& m : out["models"])
    for (const json& d : m.value("decode", json::array())) {
      if (d.contains("error") && ++errors) {
        std::printf("%-14s %6d FAILED: %s\n", m["model"].get<std::string>().c_str(), d["batch"].get<int>(),
                    d["error"].get<std::string>().c_str());
        continue;
      }
      std::printf("%-14s %6d %12.1f %10.3f %10.3f %7.1f %8.1f\n", m["model"].get<std::string>().c_str(),
                  d["batch"].get<int>(), num(d, "tok_s"), num(d, "step_ms"), num(d, "forward_ms"),
                  num(d, "pct_roofline"), num(d, "pct_roofline_forward"));
    }
  std::printf("%-14s %6s %12s %10s\n", "model", "prefill", "tok/s", "ttft_s");
  for (const json& m : out["models"])
    for (const json& p : m.value("prefill", json::array())) {
      if (p.contains("error") && ++errors) {
        std::printf("%-14s %6d FAILED: %s\n", m["model"].get<std::string>().c_str(), p["tokens"].get<int>(),
                    p["error"].get<std::string>().c_str());
        continue;
      }
      std::printf("%-14s %6d %12.1f %10.3f\n", m["model"].get<std::string>().c_str(), p["tokens"].get<int>(),
                  num(p, "tok_s"), num(p, "seconds"));
    }
  std::printf("%-14s %8s %10s %10s\n", "model", "ready_s", "capture_s", "build_s");
  for (const json& m : out["models"]) {
    if (m.contains("error") && ++errors) {
      std::printf("%-14s FAILED: %s\n", m["model"].get<std::string>().c_str(), m["error"].get<std::string>().c_str());
      continue;
    }
    std::printf("%-14s %8.2f %10.2f %10.2f\n", m["model"].get<std::string>().c_str(), num(m, "ready_s"),
                num(m, "graph_capture_s"), num(m, "backend_build_s"));
  }
  for (const json& m : out["models"])  // --profile: each profiled batch's ops, largest first
    for (const json& d : m.value("decode", json::array())) {
      if (!d.contains("profile")) continue;
      const json& pr = d["profile"];
      std::printf("profile %s batch %d: GPU %.1f us/step (ops %.1f):", m["model"].get<std::string>().c_str(),
                  d["batch"].get<int>(), num(pr, "step_us"), num(pr, "ops_us"));
      for (const json& o : pr["ops"]) std::printf(" %s %.1f;", o["op"].get<std::string>().c_str(), num(o, "us_per_step"));
      std::printf("\n");
    }
  if (errors) std::printf("%d FAILED (see above)\n", errors);
  return errors;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options opt = parse_args(argc, argv);
    std::string why;
    RunContext ctx(opt);
    ctx.device = flint::resolve_device(opt.device, flint::cuda_backend_built(),
                                       opt.device == "cpu" ? 0 : flint::cuda_device_count(&why), why);
    ctx.max_batch = *std::max_element(opt.batches.begin(), opt.batches.end());
    ctx.max_prefill = *std::max_element(opt.prefill.begin(), opt.prefill.end());
    if (ctx.max_batch > 256) fail("--batches: at most 256 sequences per step (the scheduler's and the graphs' limit)");
    if (opt.profile && ctx.device != "cuda") fail("--profile: the op profiler is the CUDA backend's (device ", ctx.device, ")");

    // Bandwidth first, before any model holds memory.
    const int cpu_threads = opt.threads > 0 ? opt.threads : int(std::max(1u, std::thread::hardware_concurrency()));
    double cuda_init_s = 0;
    std::string bandwidth_how;
#ifdef FLINT_HAVE_CUDA
    if (ctx.device == "cuda") {
      // The context is made once per process (a server pays it once at start too): timed apart, before the models.
      const auto t_init = SteadyClock::now();
      cuda_check(cudaFree(nullptr), "creating the CUDA context");
      cuda_init_s = seconds_since(t_init);
      ctx.gbps = measure_cuda_copy_gbps(opt.quick);
      bandwidth_how = "cudaMemcpy device to device, 2 x buffer";
    }
#endif
    if (ctx.device == "cpu") {
      ctx.gbps = measure_cpu_read_gbps(cpu_threads);
      bandwidth_how = "read of 256 MiB over " + std::to_string(cpu_threads) + " threads, 1 x buffer";
    }
    std::printf("engine_bench: device %s, bandwidth %.1f GB/s (%s)", ctx.device.c_str(), ctx.gbps,
                bandwidth_how.c_str());
    if (ctx.device == "cuda") std::printf("; CUDA context made in %.2f s (not in ready_s)", cuda_init_s);
    std::printf("\ndecode through the Engine (scheduler + backend + sampling, %s), prompt %d, %d timed steps "
                "after %d\n", opt.sampling.c_str(), opt.prompt, opt.decode_steps, kWarmSteps);
    std::fflush(stdout);

    json out = {{"engine", "flint"},
                {"device", ctx.device},
                {"bandwidth_gbps", ctx.gbps},
                {"bandwidth_method", bandwidth_how},
                {"cuda_init_s", cuda_init_s},
                {"decode_method", "engine"},
                {"prompt_tokens", opt.prompt},
                {"decode_steps", opt.decode_steps},
                {"sampling", opt.sampling},
                {"warm_steps", kWarmSteps},
                {"models", json::array()}};
    for (const std::string& name : opt.models) {
      try {
        out["models"].push_back(bench_model(name, ctx));
      } catch (const std::exception& e) {  // this model could not be built: the next ones still run
        std::printf("\n%s: FAILED: %s\n", name.c_str(), e.what());
        std::fflush(stdout);
        out["models"].push_back({{"model", name}, {"error", e.what()}});
      }
    }
    const int errors = print_summary(out);
    if (!opt.json_path.empty()) {
      std::ofstream f(opt.json_path);
      f << out.dump(1) << "\n";
      if (!f) fail("--json ", opt.json_path, ": cannot write");
    }
    return errors ? 1 : 0;
  } catch (const flint::Error& e) {
    std::fprintf(stderr, "engine_bench: %s\n", e.what());
    return 1;
  }
}
