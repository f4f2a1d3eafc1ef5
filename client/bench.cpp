// `flint bench`: a load generator. N threads each run one streaming call at a
// time until M requests are done; every request has its own prompt of P
// tokens (random common words, so the prefix cache does not serve it) and
// asks for exactly O tokens (ignore_eos). Reports throughput and client-side
// latency percentiles.
#include <atomic>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "client/commands.h"
#include "client/print.h"
#include "client/stats.h"
#include "client/stream.h"

namespace flint::client {
namespace {

const char* const kUsage =
    "usage: flint bench [options]\n"
    "Load generator: concurrent streams, throughput and latency percentiles.\n"
    "  --streams N             concurrent calls (default 1)\n"
    "  --requests M            requests in all (default 16)\n"
    "  --prompt-tokens P       prompt length in tokens (default 128)\n"
    "  --output-tokens O       tokens generated per request, exactly (default 64)\n"
    "  --shared-prefix K       the first K prompt tokens are the same in every request\n"
    "  --chat                  send each prompt as a user message through Chat\n"
    "                          (the template adds tokens; prompt length is then approximate)\n"
    "  --temperature T         default 0 (greedy)\n"
    "  --seed S                seeds the prompts and the sampling (default: a random seed,\n"
    "                          so a second run does not find the first one's prompts cached)\n"
    "  --json                  one JSON object instead of the table\n"
    "Percentiles are measured by the client: TTFT from the call to the first token,\n"
    "inter-token latency as the gap between token-carrying deltas over their tokens.\n"
    "Exits 1 when any request failed.\n";

// Common words, each one token in most vocabularies with a leading space.
const char* const kWords =
    " the of and to in is was for on that with as by at from his her are an be this which or had not "
    "but have they were one all their there been has when who will more no if out so said what up its "
    "about into than them can only other new some could time these two may then do first any my now "
    "such like our over man me even most made after also did many before must through back years where "
    "much your way well down should because each just those people how too little state good very make "
    "world still own see men work long get here between both life being under never day same another "
    "know while last might us great old year off come since against go came right used take three house "
    "water river green light music story table window city paper music garden market letter bridge "
    "mountain island summer winter morning evening yellow silver horse forest ocean engine";

struct Options {
  int streams = 1, requests = 16, prompt_tokens = 128, output_tokens = 64, shared_prefix = 0;
  bool chat = false, json = false;
  float temperature = 0.0f;
  std::optional<uint64_t> seed;  // unset: drawn per run
};

Options parse(GlobalOptions& g, const Args& args) {
  Options o;
  ArgReader r("bench", args, kUsage);
  while (r.next()) {
    if (r.global(g)) continue;
    if (r.is("--streams")) o.streams = int(r.integer(1, 4096));
    else if (r.is("--requests")) o.requests = int(r.integer(1, 10'000'000));
    else if (r.is("--prompt-tokens")) o.prompt_tokens = int(r.integer(1, 1 << 24));
    else if (r.is("--output-tokens")) o.output_tokens = int(r.integer(1, 1 << 24));
    else if (r.is("--shared-prefix")) o.shared_prefix = int(r.integer(0, 1 << 24));
    else if (r.is("--chat")) o.chat = true;
    else if (r.is("--temperature")) o.temperature = float(r.number());
    else if (r.is("--seed")) o.seed = r.unsigned_integer();
    else if (r.is("--json")) o.json = true;
    else r.unknown();
  }
  if (o.shared_prefix > o.prompt_tokens) r.usage_error("--shared-prefix must not exceed --prompt-tokens");
  if (!o.seed) o.seed = std::random_device()() | uint64_t(std::random_device()()) << 32;
  return o;
}

struct Result {
  bool ok = false;
  grpc::Status status;
  double ttft_ms = 0, e2e_ms = 0;
  std::vector<double> inter_token_ms;
  int prompt_tokens = 0, completion_tokens = 0, cached_prompt_tokens = 0;
};

// Distinct token ids of the word list, no BOS.
grpc::Status word_pool(v1::Inference::Stub& stub, const GlobalOptions& g, std::vector<int32_t>& pool) {
  v1::TokenizeRequest req;
  req.set_text(kWords);
  req.set_add_special_tokens(false);
  grpc::ClientContext ctx;
  prepare_call(ctx, g, /*streaming=*/false);
  v1::TokenizeResponse resp;
  grpc::Status status = stub.Tokenize(&ctx, req, &resp);
  std::set<int32_t> seen;
  for (int32_t id : resp.token_ids())
    if (seen.insert(id).second) pool.push_back(id);
  return status;
}

// Request i's prompt: the shared prefix, then tokens drawn from its own generator.
std::vector<int32_t> make_prompt(const Options& o, const std::vector<int32_t>& pool, int i) {
  std::vector<int32_t> ids;
  const uint64_t base = *o.seed * 0x9E3779B97F4A7C15ull;
  std::mt19937_64 shared(base + 1), own(base + 2 + uint64_t(i));
  std::uniform_int_distribution<size_t> pick(0, pool.size() - 1);
  for (int k = 0; k < o.prompt_tokens; ++k) ids.push_back(pool[pick(k < o.shared_prefix ? shared : own)]);
  return ids;
}

Result run_one(v1::Inference::Stub& stub, const GlobalOptions& g, const Options& o, int i,
               const std::vector<int32_t>& ids, const std::string& chat_text) {
  grpc::ClientContext ctx;
  prepare_call(ctx, g, /*streaming=*/true);
  auto fill = [&](auto& req) {
    req.mutable_sampling()->set_temperature(o.temperature);
    req.mutable_sampling()->set_seed(*o.seed + uint64_t(i));
    req.mutable_stopping()->set_max_tokens(o.output_tokens);
    req.mutable_stopping()->set_ignore_eos(true);
    req.set_request_id("bench-" + std::to_string(i));
  };
  const Clock::time_point start = Clock::now();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;
  if (o.chat) {
    v1::ChatRequest req;
    v1::ChatMessage& m = *req.add_messages();
    m.set_role("user");
    m.set_content(chat_text);
    fill(req);
    reader = stub.Chat(&ctx, req);
  } else {
    v1::GenerateRequest req;
    req.mutable_token_ids()->mutable_ids()->Assign(ids.begin(), ids.end());
    fill(req);
    reader = stub.Generate(&ctx, req);
  }
  StreamOutcome out = read_stream(*reader, start, nullptr);
  Result r;
  r.status = out.status;
  r.ok = out.status.ok();
  r.e2e_ms = out.total_ms;
  r.ttft_ms = out.timeline.ttft_ms().value_or(0);
  r.inter_token_ms = out.timeline.inter_token_ms();
  if (out.finished) {
    r.prompt_tokens = out.finished->usage().prompt_tokens();
    r.completion_tokens = out.finished->usage().completion_tokens();
    r.cached_prompt_tokens = out.finished->usage().cached_prompt_tokens();
  }
  return r;
}

Json summary_json(const Summary& s) {
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90}, {"p99", s.p99}, {"max", s.max}};
}

}  // namespace

int run_bench(GlobalOptions g, const Args& args) {
  Options o = parse(g, args);
  auto stub = v1::Inference::NewStub(make_channel(g));

  v1::ModelInfo info;
  if (grpc::Status status = fetch_model_info(*stub, g, info); !status.ok()) return report_error(status);
  if (info.max_sequence_tokens() > 0 && o.prompt_tokens + o.output_tokens > info.max_sequence_tokens()) {
    std::cerr << "flint: bench: --prompt-tokens + --output-tokens = " << o.prompt_tokens + o.output_tokens
              << " exceeds the server's max_sequence_tokens " << info.max_sequence_tokens() << "\n";
    return kExitUsage;
  }
  std::vector<int32_t> pool;
  if (grpc::Status status = word_pool(*stub, g, pool); !status.ok()) return report_error(status);
  if (pool.empty()) {
    std::cerr << "flint: bench: the server tokenized the word list to nothing\n";
    return kExitFailure;
  }

  // Prompts are made before the clock starts; --chat needs their text.
  std::vector<std::vector<int32_t>> prompts(size_t(o.requests));
  std::vector<std::string> chat_texts(size_t(o.requests));
  for (int i = 0; i < o.requests; ++i) {
    prompts[size_t(i)] = make_prompt(o, pool, i);
    if (!o.chat) continue;
    v1::DetokenizeRequest req;
    req.mutable_token_ids()->Assign(prompts[size_t(i)].begin(), prompts[size_t(i)].end());
    grpc::ClientContext ctx;
    prepare_call(ctx, g, /*streaming=*/false);
    v1::DetokenizeResponse resp;
    if (grpc::Status status = stub->Detokenize(&ctx, req, &resp); !status.ok()) return report_error(status);
    chat_texts[size_t(i)] = resp.text();
  }

  std::vector<Result> results(size_t(o.requests));
  std::atomic<int> next{0};
  const Clock::time_point t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < std::min(o.streams, o.requests); ++t) {
    threads.emplace_back([&] {
      for (int i; (i = next.fetch_add(1)) < o.requests;)
        results[size_t(i)] = run_one(*stub, g, o, i, prompts[size_t(i)], chat_texts[size_t(i)]);
    });
  }
  for (std::thread& t : threads) t.join();
  const double wall_s = ms_between(t0, Clock::now()) / 1000.0;

  std::vector<double> ttft, itl, e2e;
  int completed = 0, errors = 0, short_outputs = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  const Result* first_error = nullptr;
  for (const Result& r : results) {
    if (!r.ok) {
      ++errors;
      if (!first_error) first_error = &r;
      continue;
    }
    ++completed;
    ttft.push_back(r.ttft_ms);
    e2e.push_back(r.e2e_ms);
    itl.insert(itl.end(), r.inter_token_ms.begin(), r.inter_token_ms.end());
    prompt_tokens += r.prompt_tokens;
    completion_tokens += r.completion_tokens;
    cached_tokens += r.cached_prompt_tokens;
    short_outputs += r.completion_tokens != o.output_tokens;
  }
  const Summary ttft_s = summarize(ttft), itl_s = summarize(itl), e2e_s = summarize(e2e);
  const double rps = completed / wall_s, out_tps = double(completion_tokens) / wall_s,
               total_tps = double(prompt_tokens + completion_tokens) / wall_s;

  if (o.json) {
    Json j = {{"server", g.server},
                        {"model", info.name()},
                        {"api", o.chat ? "chat" : "generate"},
                        {"streams", o.streams},
                        {"requests", o.requests},
                        {"prompt_tokens", o.prompt_tokens},
                        {"output_tokens", o.output_tokens},
                        {"shared_prefix", o.shared_prefix},
                        {"seed", *o.seed},
                        {"completed", completed},
                        {"errors", errors},
                        {"short_outputs", short_outputs},
                        {"wall_s", wall_s},
                        {"requests_per_s", rps},
                        {"output_tokens_per_s", out_tps},
                        {"total_tokens_per_s", total_tps},
                        {"mean_prompt_tokens", completed ? double(prompt_tokens) / completed : 0.0},
                        {"cached_prompt_tokens", cached_tokens},
                        {"ttft_ms", summary_json(ttft_s)},
                        {"itl_ms", summary_json(itl_s)},
                        {"e2e_ms", summary_json(e2e_s)}};
    if (first_error)
      j["first_error"] = std::string(status_code_name(first_error->status.error_code())) + ": " +
                         first_error->status.error_message();
    std::cout << json_line(j) << "\n";
  } else {
    std::ostream& os = std::cout;
    auto row = [&](const char* name, const Summary& s) {
      os << "  " << std::left << std::setw(22) << name << std::right << "p50 " << std::setw(9) << s.p50 << "  p99 "
         << std::setw(9) << s.p99 << "  mean " << std::setw(9) << s.mean << "\n";
    };
    os << std::fixed << std::setprecision(2);
    os << "bench: " << info.name() << " at " << g.server << ", " << (o.chat ? "Chat" : "Generate") << ", "
       << o.streams << " streams, " << o.requests << " requests, prompt " << o.prompt_tokens << " tokens"
       << (o.shared_prefix ? " (shared prefix " + std::to_string(o.shared_prefix) + ")" : "") << ", output "
       << o.output_tokens << " tokens, seed " << *o.seed << "\n";
    os << "  " << std::left << std::setw(22) << "wall time (s)" << wall_s << "\n";
    os << "  " << std::setw(22) << "completed" << completed << "\n";
    os << "  " << std::setw(22) << "errors" << errors << "\n";
    os << "  " << std::setw(22) << "requests/s" << rps << "\n";
    os << "  " << std::setw(22) << "output tokens/s" << out_tps << "\n";
    os << "  " << std::setw(22) << "total tokens/s" << total_tps << "\n";
    os << "  " << std::setw(22) << "prompt tokens (mean)" << (completed ? double(prompt_tokens) / completed : 0.0)
       << ", cached " << cached_tokens << " in all\n";
    row("TTFT (ms)", ttft_s);
    row("inter-token (ms)", itl_s);
    row("end-to-end (ms)", e2e_s);
  }
  if (short_outputs)
    std::cerr << "flint: bench: " << short_outputs << " requests did not get exactly " << o.output_tokens
              << " tokens\n";
  if (first_error) {
    std::cerr << "flint: " << status_code_name(first_error->status.error_code()) << ": "
              << first_error->status.error_message() << " (" << errors << " of " << o.requests
              << " requests failed; this was the first)\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace flint::client
