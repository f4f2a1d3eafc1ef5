// cpu_model_bench: prompt (prefill) and decode tokens/s of the CPU backend on a
// model, median of several runs. Prints a table; --json PATH writes the figures.
//   cpu_model_bench (-m MODEL | --random-weights SPEC) [-t THREADS] [--prompt N] [--decode N] [--runs R] [--json PATH]
// --random-weights NAME[:layers=N][,seed=S] benchmarks a bf16 model of a real shape made in memory
// (model/random_weights.h), so a model's speed can be measured without its file.
// Prefill: one forward pass over N prompt tokens (chunked at 512). Decode: N
// steps of one token each after that prompt, greedy. The roofline line counts
// the weight bytes one decode step reads (every weight tensor once, as stored:
// bench/roofline.h).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/offline_runner.h"
#include "bench/roofline.h"
#include "model/cpu_backend.h"
#include "model/model_loader.h"
#include "model/random_weights.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, random_spec, json_path;
  int threads = 0, prompt_len = 128, decode_len = 128, runs = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (a == "-m") model_path = next();
    else if (a == "--random-weights") random_spec = next();
    else if (a == "-t") threads = std::atoi(next().c_str());
    else if (a == "--prompt") prompt_len = std::atoi(next().c_str());
    else if (a == "--decode") decode_len = std::atoi(next().c_str());
    else if (a == "--runs") runs = std::atoi(next().c_str());
    else if (a == "--json") json_path = next();
    else {
      std::fprintf(stderr, "usage: cpu_model_bench (-m MODEL | --random-weights NAME[:layers=N][,seed=S]) [-t THREADS]\n"
                           "                       [--prompt N] [--decode N] [--runs R] [--json PATH]\n");
      return 2;
    }
  }
  if (model_path.empty() == random_spec.empty() || prompt_len < 1 || decode_len < 1 || runs < 1) {
    std::fprintf(stderr, "cpu_model_bench: give one of -m MODEL and --random-weights SPEC; counts must be positive\n");
    return 2;
  }
  try {
    const auto t_load = std::chrono::steady_clock::now();
    flint::LoadedModel model = random_spec.empty()
                                   ? flint::load_model(model_path)
                                   : flint::load_random_model(flint::parse_random_model_spec(random_spec), threads);
    if (!random_spec.empty()) {
      model_path = model.path;
      std::printf("random weights generated in %.2f s\n",
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count());
    }
    flint::CpuBackendOptions opts;
    opts.num_threads = threads;
    opts.num_kv_blocks = (prompt_len + decode_len + 15) / 16 + 1;
    flint::CpuBackend backend(model.config, model.weights, opts);
    flint::OfflineRunner runner(backend);
    const int32_t vocab = model.config.vocab_size;
    std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
    for (int i = 0; i < prompt_len; ++i) prompt[size_t(i)] = int32_t((uint64_t(i) * 2654435761u + 17) % uint64_t(vocab));

    using clock = std::chrono::steady_clock;
    std::vector<double> prefill_s, decode_s;
    for (int r = 0; r < runs + 1; ++r) {  // run 0 warms up
      runner.reset();
      auto t0 = clock::now();
      std::vector<float> logits = runner.feed(prompt);
      auto t1 = clock::now();
      for (int i = 0; i < decode_len; ++i) {
        int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        logits = runner.feed(std::vector<int32_t>{next});
      }
      auto t2 = clock::now();
      if (r == 0) continue;
      prefill_s.push_back(std::chrono::duration<double>(t1 - t0).count());
      decode_s.push_back(std::chrono::duration<double>(t2 - t1).count());
    }
    const double prefill_tps = prompt_len / median(prefill_s), decode_tps = decode_len / median(decode_s);
    const double gb = double(flint::bench::decode_weight_bytes(model.weights)) / 1e9;
    std::printf("model %s\n%s\nthreads %d, prompt %d tokens, decode %d tokens, median of %d runs\n", model_path.c_str(),
                model.config.describe().c_str(), backend.num_threads(), prompt_len, decode_len, runs);
    std::printf("%-10s %12s %14s\n", "phase", "tok/s", "weights GB/s");
    std::printf("%-10s %12.1f %14s\n", "prefill", prefill_tps, "-");
    std::printf("%-10s %12.1f %14.2f\n", "decode", decode_tps, decode_tps * gb);
    if (!json_path.empty()) {
      std::ofstream f(json_path);
      f << "{\"engine\": \"flint-cpu\", \"model\": \"" << model_path << "\", \"threads\": " << backend.num_threads()
        << ", \"prompt_tokens\": " << prompt_len << ", \"decode_tokens\": " << decode_len
        << ", \"prefill_tok_s\": " << prefill_tps << ", \"decode_tok_s\": " << decode_tps
        << ", \"decode_weight_gb\": " << gb << "}\n";
    }
  } catch (const flint::Error& e) {
    std::fprintf(stderr, "cpu_model_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
