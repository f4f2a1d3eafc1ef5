// engine_overhead_bench: what a decode step costs the host, with the GPU taken out. The engine runs on a backend
// that computes nothing and "samples on its device" (as CudaBackend does: only token ids come back), so a step's
// time is the engine's own: scheduling, the step plan, the sampling batch, appending tokens, stop checks and
// stream events. That is the part of a CUDA decode step that no kernel work can hide (the engine does not yet
// prepare step N+1 while the GPU runs step N), to set beside the roofline step time: e.g. ~820 µs for
// Llama-3.2-1B at batch 1 on an H100. CudaBackend's own host work per step (the staging arrays, one copy, one graph
// launch, one copy back) is not in it.
//
//   engine_overhead_bench [--model SHAPE] [--batches LIST] [--steps N] [--json PATH]
//
// Prints, per batch, the median host microseconds per decode step over the steady middle of the run.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/engine.h"
#include "model/backend.h"
#include "model/model_shapes.h"

namespace {

using Clock = std::chrono::steady_clock;

// Computes nothing; every step's entry is stamped (preallocated: no allocation on the engine thread).
class NullDeviceBackend : public flint::Backend {
 public:
  explicit NullDeviceBackend(const flint::ModelConfig& config) : config_(config), stamps_(size_t(1) << 16) {}
  void forward(const flint::StepPlan&, float*) override { flint::fail("NullDeviceBackend samples on its device"); }
  bool samples_on_device() const override { return true; }
  void forward_sample(const flint::StepPlan& plan, const flint::cpu::SampleBatch&, int32_t* token_ids,
                      float* logprobs) override {
    while (!open_.load(std::memory_order_acquire)) std::this_thread::yield();  // until every request is in
    if (count_ < stamps_.size()) stamps_[count_++] = {Clock::now().time_since_epoch().count(), plan.num_tokens()};
    for (size_t i = 0; i < plan.logit_rows.size(); ++i) {
      token_ids[i] = int32_t(1000 + i % 1000);  // never an end-of-generation id: max_tokens ends each request
      if (logprobs) logprobs[i] = -0.5f;  // null: not wanted (the engine asks for none when no row reports them)
    }
  }
  const flint::ModelConfig& config() const override { return config_; }
  int32_t block_size() const override { return 16; }
  int32_t num_kv_blocks() const override { return 1 << 20; }

  struct Stamp {
    int64_t ns;
    int32_t tokens;
  };
  std::vector<Stamp> stamps() const { return {stamps_.begin(), stamps_.begin() + ptrdiff_t(count_)}; }
  // The first step waits for this: on a busy machine the submitting thread may be descheduled long enough for the
  // first requests to finish before the last arrive, and the batch would never decode together.
  void open() { open_.store(true, std::memory_order_release); }

 private:
  flint::ModelConfig config_;
  std::vector<Stamp> stamps_;
  size_t count_ = 0;  // written on the engine thread, read after the engine is destroyed
  std::atomic<bool> open_{false};
};

struct Result {
  int32_t batch = 0, steps = 0;
  double median_us = 0, mean_us = 0;
};

Result measure(const flint::ModelConfig& config, int32_t batch, int32_t steps) {
  NullDeviceBackend backend(config);
  {
    flint::EngineConfig ec;
    ec.scheduler.max_num_seqs = batch;
    flint::Engine engine(backend, nullptr, ec);
    std::vector<std::shared_ptr<flint::RequestStream>> streams;
    for (int32_t i = 0; i < batch; ++i) {
      flint::EngineRequest r;
      r.prompt_token_ids.assign(32, 100 + i);
      r.sampling.temperature = 0;
      r.stopping.max_tokens = steps;
      r.stopping.ignore_eos = true;
      flint::SubmitResult s = engine.submit(std::move(r));
      if (!s.status.ok()) flint::fail("submit: ", s.status.message);
      streams.push_back(s.stream);
    }
    backend.open();
    for (auto& stream : streams)
      for (;;) {
        std::optional<flint::StreamEvent> e = stream->pop(std::chrono::minutes(1));
        if (!e) flint::fail("a request produced nothing for a minute");
        if (auto* f = std::get_if<flint::StreamFinal>(&*e)) {
          if (!f->status.ok()) flint::fail("a request failed: ", f->status.message);
          break;
        }
      }
  }  // the engine thread has ended: the stamps are stable
  // Steady decode: consecutive steps of exactly `batch` tokens, the middle half of them.
  const auto s = backend.stamps();
  std::vector<double> gaps;
  for (size_t i = 1; i < s.size(); ++i)
    if (s[i - 1].tokens == batch && s[i].tokens == batch) gaps.push_back(double(s[i].ns - s[i - 1].ns) / 1e3);
  if (gaps.size() < 8) flint::fail("batch ", batch, ": only ", gaps.size(), " decode steps of the whole batch");
  std::vector<double> mid(gaps.begin() + ptrdiff_t(gaps.size() / 4), gaps.end() - ptrdiff_t(gaps.size() / 4));
  Result r;
  r.batch = batch;
  r.steps = int32_t(mid.size());
  for (double g : mid) r.mean_us += g / double(mid.size());
  std::nth_element(mid.begin(), mid.begin() + ptrdiff_t(mid.size() / 2), mid.end());
  r.median_us = mid[mid.size() / 2];
  return r;
}

std::vector<int32_t> parse_list(const std::string& s) {
  std::vector<int32_t> out;
  for (size_t at = 0; at < s.size();) {
    const size_t end = std::min(s.find(',', at), s.size());
    out.push_back(int32_t(std::stoi(s.substr(at, end - at))));
    if (out.back() < 1) flint::fail("--batches: every batch must be >= 1");
    at = end + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string model = "llama-3.2-1b", json_path;
  std::vector<int32_t> batches = {1, 8, 32, 128, 256};
  int32_t steps = 400;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) flint::fail(a, " needs a value");
      return argv[++i];
    };
    if (a == "--model") model = value();
    else if (a == "--batches") batches = parse_list(value());
    else if (a == "--steps") steps = std::stoi(value());
    else if (a == "--json") json_path = value();
    else if (a == "-h" || a == "--help") {
      std::puts("usage: engine_overhead_bench [--model SHAPE] [--batches LIST] [--steps N] [--json PATH]");
      return 0;
    } else {
      flint::fail("unknown argument ", a);
    }
  }
  if (steps < 40) flint::fail("--steps must be at least 40");
  const flint::ModelConfig config = flint::find_model_shape(model).config;
  std::printf("## summary engine_overhead_bench (%s: host time per decode step, no device work)\n", model.c_str());
  std::printf("%6s %8s %12s %10s\n", "batch", "steps", "median_us", "mean_us");
  nlohmann::json rows = nlohmann::json::array();
  for (int32_t b : batches) {
    const Result r = measure(config, b, steps);
    std::printf("%6d %8d %12.1f %10.1f\n", r.batch, r.steps, r.median_us, r.mean_us);
    rows.push_back({{"batch", r.batch}, {"steps", r.steps}, {"median_us", r.median_us}, {"mean_us", r.mean_us}});
  }
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << nlohmann::json{{"model", model}, {"decode", rows}}.dump(1) << "\n";
    if (!out) flint::fail("cannot write ", json_path);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "engine_overhead_bench: %s\n", e.what());
  return 1;
}
