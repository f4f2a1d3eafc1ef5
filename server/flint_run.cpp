// flint-run: the model in-process, no server. Streams a completion of one
// prompt to stdout as it is made; prompt and generation speed go to stderr.
// With --prompt-ids it reads token ids and, when the model has no tokenizer (a
// random-weight model), prints token ids; --dump-logits writes the prompt's logits;
// --diff-backends compares --device's backend with the CPU's, intermediate by intermediate.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/offline_runner.h"
#include "engine/sampler.h"
#include "model/chat_template.h"
#include "model/backend_diff.h"
#include "model/backend_factory.h"
#include "model/model_loader.h"
#include "model/model_shapes.h"
#include "model/random_weights.h"
#include "model/tokenizer.h"

namespace {

struct Options {
  std::string model, random_weights, prompt, template_name, system, dump_logits, device = "auto";
  std::vector<int32_t> prompt_ids;
  bool chat = false, think = true, show_prompt = false, cuda_graphs = true, diff = false;
  double diff_bound = flint::kDiffDefaultRelBound;
  int max_tokens = 256, threads = 0, context = 4096;
  flint::SamplingParams sampling;
};

const char* kUsage =
    "usage: flint-run (-m MODEL | --random-weights SPEC) (-p PROMPT | --prompt-ids IDS) [options]\n"
    "  -m, --model PATH        GGUF file, or a directory with config.json + safetensors + tokenizer.json\n"
    "  --random-weights SPEC   a random bf16 model of a real shape, no file: NAME[:layers=N][,seed=S]\n"
    "                          (names: see --list-shapes); it has no tokenizer, so use --prompt-ids\n"
    "  --list-shapes           print the known shapes and exit\n"
    "  -p, --prompt TEXT       the prompt\n"
    "  --prompt-ids IDS        the prompt as token ids, e.g. 1,2,3 (no tokenizer needed; without a\n"
    "                          tokenizer the generated tokens are printed as ids)\n"
    "  --dump-logits FILE      write every prompt position's logits to FILE (.npy, float32,\n"
    "                          shape (prompt tokens, vocab)); -n 0 then stops after the prompt\n"
    "  --chat                  apply the model's chat template (the prompt is one user message)\n"
    "  --system TEXT           system message with --chat (default: the template's own)\n"
    "  --template NAME         chatml | qwen3 | llama3 | deepseek-r1 (default: from the model)\n"
    "  --no-think              render the template with thinking off (Qwen3)\n"
    "  -n, --max-tokens N      tokens to generate (default 256; may be 0 with --dump-logits)\n"
    "  --temperature T         0 is greedy (default 0.7)\n"
    "  --top-k K  --top-p P  --min-p P  --repetition-penalty R\n"
    "  --presence-penalty P  --frequency-penalty P\n"
    "  --seed S                same seed, same tokens (default 0)\n"
    "  -t, --threads N         CPU threads (default: all)\n"
    "  -c, --context N         KV cache capacity in tokens (default 4096)\n"
    "  --device auto|cpu|cuda  where the model runs; auto: CUDA when built with it and a GPU is present (default auto)\n"
    "  --cuda-graphs on|off    CUDA graphs for decode steps (default on; off: every step eager)\n"
    "  --diff-backends         instead of generating: run the prompt's prefill and one decode step on the CPU\n"
    "                          backend and on --device's, print the error of every named intermediate in layer\n"
    "                          order and flag the first over the bound; exit 1 when one is over\n"
    "  --diff-bound R          the bound on max|diff| / max|cpu| per intermediate (default 0.0625)\n"
    "  --show-prompt           print the rendered prompt to stderr\n";

[[noreturn]] void usage_error(const std::string& msg) {
  std::cerr << "flint-run: " << msg << "\n" << kUsage;
  std::exit(2);
}

// "1,2,3" -> {1, 2, 3}; ids are checked against the vocabulary once the model is loaded.
std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  for (size_t pos = 0; pos <= text.size();) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    int32_t id = 0;
    auto [end, ec] = std::from_chars(text.data() + pos, text.data() + comma, id);
    if (comma == pos || ec != std::errc() || end != text.data() + comma || id < 0)
      usage_error("--prompt-ids: \"" + text.substr(pos, comma - pos) + "\" is not a token id (want e.g. 1,2,3)");
    ids.push_back(id);
    pos = comma + 1;
  }
  return ids;
}

void list_shapes() {
  for (const flint::ModelShape& s : flint::model_shapes())
    std::printf("%-14s %-28s %s\n", std::string(s.name).c_str(), std::string(s.hf_repo).c_str(),
                s.config.describe().c_str());
}

// numpy's .npy format, version 1.0: magic, header length, a Python dict literal padded to 64 bytes, then the data.
void write_npy(const std::string& path, const std::vector<float>& data, size_t rows, size_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');
  header += '\n';
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) flint::fail(path, ": cannot open for writing");
  const uint8_t preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, uint8_t(header.size() & 0xFF), uint8_t(header.size() >> 8)};
  bool ok = std::fwrite(preamble, 1, sizeof preamble, f) == sizeof preamble &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            std::fwrite(data.data(), sizeof(float), data.size(), f) == data.size();
  ok = std::fclose(f) == 0 && ok;
  if (!ok) flint::fail(path, ": write failed");
}

Options parse(int argc, char** argv) {
  Options o;
  o.sampling.temperature = 0.7f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    auto number = [&]() -> double {
      std::string v = value();
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0') usage_error(a + ": not a number: " + v);
      return d;
    };
    if (a == "-m" || a == "--model") o.model = value();
    else if (a == "--random-weights") o.random_weights = value();
    else if (a == "--list-shapes") { list_shapes(); std::exit(0); }
    else if (a == "-p" || a == "--prompt") o.prompt = value();
    else if (a == "--prompt-ids") o.prompt_ids = parse_ids(value());
    else if (a == "--dump-logits") o.dump_logits = value();
    else if (a == "--chat") o.chat = true;
    else if (a == "--system") o.system = value();
    else if (a == "--template") o.template_name = value();
    else if (a == "--no-think") o.think = false;
    else if (a == "-n" || a == "--max-tokens") o.max_tokens = int(number());
    else if (a == "--temperature") o.sampling.temperature = float(number());
    else if (a == "--top-k") o.sampling.top_k = int(number());
    else if (a == "--top-p") o.sampling.top_p = float(number());
    else if (a == "--min-p") o.sampling.min_p = float(number());
    else if (a == "--repetition-penalty") o.sampling.repetition_penalty = float(number());
    else if (a == "--presence-penalty") o.sampling.presence_penalty = float(number());
    else if (a == "--frequency-penalty") o.sampling.frequency_penalty = float(number());
    else if (a == "--seed") o.sampling.seed = uint64_t(number());
    else if (a == "-t" || a == "--threads") o.threads = int(number());
    else if (a == "-c" || a == "--context") o.context = int(number());
    else if (a == "--show-prompt") o.show_prompt = true;
    else if (a == "--device") {
      o.device = value();
      if (o.device != "auto" && o.device != "cpu" && o.device != "cuda") usage_error("--device must be auto, cpu or cuda");
    } else if (a == "--cuda-graphs") {
      const std::string v = value();
      if (v != "on" && v != "off") usage_error("--cuda-graphs must be on or off");
      o.cuda_graphs = v == "on";
    } else if (a == "--diff-backends") o.diff = true;
    else if (a == "--diff-bound") o.diff_bound = number();
    else if (a == "-h" || a == "--help") { std::cout << kUsage; std::exit(0); }
    else usage_error("unknown option " + a);
  }
  if (o.model.empty() == o.random_weights.empty()) usage_error("give one of -m MODEL and --random-weights SPEC");
  if (o.prompt.empty() == o.prompt_ids.empty()) usage_error("give one of -p PROMPT and --prompt-ids IDS");
  if (!o.prompt_ids.empty() && o.chat) usage_error("--chat needs -p PROMPT (a chat template renders text)");
  if (o.max_tokens < (o.dump_logits.empty() ? 1 : 0))
    usage_error(o.dump_logits.empty() ? "--max-tokens must be at least 1" : "--max-tokens must not be negative");
  if (o.context < 16) usage_error("--context must be at least 16");
  return o;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

flint::LoadedModel load(const Options& o) {
  if (o.random_weights.empty()) return flint::load_model(o.model);
  const flint::RandomModelSpec spec = flint::parse_random_model_spec(o.random_weights);
  auto t0 = std::chrono::steady_clock::now();
  flint::LoadedModel model = flint::load_random_model(spec, o.threads);
  uint64_t bytes = 0;
  for (const flint::Tensor& t : model.source->tensors()) bytes += t.nbytes;
  std::fprintf(stderr, "[flint-run] random weights %s: %.2f GB bf16 in %.2f s\n", spec.to_string().c_str(),
               double(bytes) / 1e9, seconds_since(t0));
  return model;
}

// --diff-backends: the CPU backend as the reference, --device's as the test, on the prompt's prefill and one decode
// step (model/backend_diff.h). Exit 1 when an intermediate is over the bound.
int diff(const flint::LoadedModel& model, const std::vector<int32_t>& prompt, flint::BackendOptions bopts, double bound) {
  bopts.max_tokens_per_step = std::max<int32_t>(int32_t(prompt.size()), 1);  // the prefill runs as one step
  flint::BackendOptions cpu_opts = bopts;
  cpu_opts.device = "cpu";
  flint::MadeBackend ref = flint::make_backend(model.config, model.weights, cpu_opts);
  flint::MadeBackend test = flint::make_backend(model.config, model.weights, bopts);
  std::fprintf(stderr, "[flint-run] diff: reference %s\n[flint-run] diff: test %s\n", ref.description.c_str(),
               test.description.c_str());
  if (test.device == "cpu") std::fprintf(stderr, "[flint-run] diff: note: --device resolved to cpu: CPU against CPU\n");
  const flint::DiffReport report = flint::diff_backends(*ref.backend, *test.backend, prompt, bound);
  std::fputs(flint::format_diff_report(report, bound).c_str(), stdout);
  return report.first_over < 0 ? 0 : 1;
}

int run(const Options& o) {
  flint::LoadedModel model = load(o);
  if (!model.tokenizer && o.prompt_ids.empty())
    flint::fail(model.path, ": no tokenizer found (tokenizer.json or GGUF vocabulary); give the prompt with --prompt-ids");
  const flint::Tokenizer* tok = model.tokenizer ? &*model.tokenizer : nullptr;
  o.sampling.validate();

  // End-of-generation tokens (eos, end of turn) stop, as do the template's stop tokens.
  std::set<int32_t> stop_ids;
  std::vector<int32_t> prompt_ids = o.prompt_ids;
  if (prompt_ids.empty()) {
    std::string text = o.prompt;
    stop_ids.insert(tok->eog_ids().begin(), tok->eog_ids().end());
    if (o.chat) {
      flint::ChatTemplate tmpl = o.template_name.empty()
                                     ? flint::ChatTemplate::detect(model.chat_template_source, model.config.arch)
                                     : flint::ChatTemplate::by_name(o.template_name);
      std::vector<flint::ChatMessage> messages;
      if (!o.system.empty()) messages.push_back({"system", o.system});
      messages.push_back({"user", o.prompt});
      flint::ChatOptions copts;
      copts.enable_thinking = o.think;
      text = tmpl.render(messages, copts);
      for (const std::string& s : tmpl.stop_tokens())
        if (auto id = tok->find_token(s)) stop_ids.insert(*id);
    }
    if (o.show_prompt) std::cerr << text << "\n---\n";
    // A chat template writes its own BOS where the model wants one.
    prompt_ids = tok->encode(text, /*parse_special=*/true, /*add_bos=*/!o.chat);
  } else if (tok != nullptr) {
    stop_ids.insert(tok->eog_ids().begin(), tok->eog_ids().end());
  }
  for (int32_t id : prompt_ids)
    if (id >= model.config.vocab_size)
      flint::fail("--prompt-ids: token id ", id, " outside the vocabulary [0, ", model.config.vocab_size, ")");
  if (int(prompt_ids.size()) + o.max_tokens > o.context)
    flint::fail("prompt of ", prompt_ids.size(), " tokens plus ", o.max_tokens, " new tokens exceeds the context of ", o.context,
                " tokens (raise --context or lower --max-tokens)");

  flint::BackendOptions bopts;
  bopts.device = o.device;
  bopts.num_threads = o.threads;
  bopts.num_kv_blocks = (o.context + bopts.block_size - 1) / bopts.block_size;
  bopts.max_tokens_per_step = 512;  // OfflineRunner's prefill chunk
  bopts.max_seqs_per_step = 1;      // one sequence: one decode graph (batch 1)
  if (!o.dump_logits.empty()) bopts.max_logit_rows_per_step = 512;  // every prompt position's logits, per chunk
  bopts.cuda_graphs = o.cuda_graphs;
  if (o.diff) return diff(model, prompt_ids, bopts, o.diff_bound);
  flint::MadeBackend made = flint::make_backend(model.config, model.weights, bopts);
  flint::Backend& backend = *made.backend;
  flint::OfflineRunner runner(backend);
  flint::Sampler sampler(o.sampling);
  std::optional<flint::IncrementalDetokenizer> detok;
  if (tok != nullptr) detok.emplace(*tok, /*skip_special=*/true);

  auto t0 = std::chrono::steady_clock::now();
  std::vector<float> logits;
  if (o.dump_logits.empty()) {
    logits = runner.feed(prompt_ids);
  } else {
    const size_t vocab = size_t(model.config.vocab_size);
    std::vector<float> all = runner.feed_all(prompt_ids);
    write_npy(o.dump_logits, all, prompt_ids.size(), vocab);
    logits.assign(all.end() - long(vocab), all.end());
  }
  const double prefill_s = seconds_since(t0);
  std::vector<int32_t> context = prompt_ids, generated;
  auto t1 = std::chrono::steady_clock::now();
  std::string finish = "length";
  while (int(generated.size()) < o.max_tokens) {
    int32_t next = sampler.sample(logits, context, generated).token_id;
    if (stop_ids.count(next)) {
      finish = "stop";
      break;
    }
    generated.push_back(next);
    context.push_back(next);
    std::string piece = detok ? detok->push(next) : (generated.size() > 1 ? " " : "") + std::to_string(next);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    if (int(generated.size()) == o.max_tokens) break;
    int32_t one[1] = {next};
    logits = runner.feed(one);
  }
  std::string rest = detok ? detok->flush() : "";
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  const double decode_s = seconds_since(t1);
  std::fprintf(stderr, "\n[flint-run] %s | %s | finish: %s\n", model.config.describe().c_str(),
               made.description.c_str(), finish.c_str());
  std::fprintf(stderr, "[flint-run] prompt: %zu tokens in %.3f s (%.1f tok/s) | generation: %zu tokens in %.3f s (%.1f tok/s)\n",
               prompt_ids.size(), prefill_s, double(prompt_ids.size()) / prefill_s, generated.size(), decode_s,
               generated.empty() ? 0.0 : double(generated.size()) / decode_s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  try {
    return run(o);
  } catch (const flint::Error& e) {
    std::cerr << "flint-run: error: " << e.what() << "\n";
    return 1;
  }
}
