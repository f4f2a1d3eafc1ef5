// `flint generate`: one prompt, the answer streamed to stdout as it is made.
// Reasoning goes to stderr (dimmed on a terminal) so stdout holds the answer only.
#include <unistd.h>

#include <iostream>

#include "client/commands.h"
#include "client/print.h"
#include "client/request_flags.h"
#include "client/stream.h"

namespace flint::client {
namespace {

const char* const kUsage =
    "usage: flint generate [options] PROMPT\n"
    "Streams the model's continuation of PROMPT (raw text, no chat template) to stdout;\n"
    "with --chat, PROMPT is one user message and the answer is the assistant's.\n"
    "  --chat                  send PROMPT through Chat (the model's chat template)\n"
    "  --system TEXT           a system message before PROMPT (with --chat)\n"
    "  --no-special            no BOS for a raw text prompt (add_special_tokens=false)\n"
    "  --show-reasoning        print the model's thinking to stdout, before the answer\n"
    "  --hide-reasoning        drop it (default: to stderr)\n"
    "  --logprobs N            ask for N alternatives per token (shown with --json)\n"
    "  --json                  one JSON object per stream message instead of text\n"
    "  -v                      after the answer: finish reason, tokens, TTFT, tok/s (stderr)\n";

enum class ReasoningOutput { kStderr, kStdout, kHidden };

struct Options {
  GenerationFlags gen;
  bool chat = false, json = false, add_special_tokens = true;
  std::optional<std::string> system;
  std::optional<int32_t> logprobs;
  ReasoningOutput reasoning = ReasoningOutput::kStderr;
  std::optional<std::string> prompt;
};

Options parse(GlobalOptions& g, const Args& args) {
  Options o;
  ArgReader r("generate", args, std::string(kUsage) + "\n" + kGenerationFlagsUsage);
  while (r.next()) {
    if (r.global(g) || parse_generation_flag(r, o.gen)) continue;
    if (r.is("--chat")) o.chat = true;
    else if (r.is("--system")) o.system = r.value();
    else if (r.is("--no-special")) o.add_special_tokens = false;
    else if (r.is("--show-reasoning")) o.reasoning = ReasoningOutput::kStdout;
    else if (r.is("--hide-reasoning")) o.reasoning = ReasoningOutput::kHidden;
    else if (r.is("--logprobs")) o.logprobs = int32_t(r.integer(0, 1000));
    else if (r.is("--json")) o.json = true;
    else if (r.positional() && !o.prompt) o.prompt = r.arg();
    else r.unknown();
  }
  if (!o.prompt) r.usage_error("PROMPT is required");
  if (o.system && !o.chat) r.usage_error("--system needs --chat");
  if (!o.add_special_tokens && o.chat) r.usage_error("--no-special is for raw prompts, not --chat");
  return o;
}

// Writes deltas as text: content to stdout, reasoning where the options say.
class TextPrinter {
 public:
  explicit TextPrinter(ReasoningOutput reasoning) : reasoning_(reasoning) {}

  void on_delta(const v1::Delta& d) {
    if (d.text().empty()) return;
    if (d.channel() == v1::CHANNEL_REASONING) {
      if (reasoning_ == ReasoningOutput::kHidden) return;
      std::ostream& os = reasoning_ == ReasoningOutput::kStdout ? std::cout : std::cerr;
      Dim dim{use_color(reasoning_ == ReasoningOutput::kStdout ? STDOUT_FILENO : STDERR_FILENO)};
      os << dim.begin() << d.text() << dim.end() << std::flush;
      in_reasoning_ = true;
      reasoning_ends_line_ = d.text().back() == '\n';
      return;
    }
    end_reasoning();
    std::cout << d.text() << std::flush;
    content_ends_line_ = d.text().back() == '\n';
    any_content_ = true;
  }

  // Ends the output with a newline (stdout; and stderr after reasoning there).
  // A failed stream gets one only to end a partial line.
  void finish(bool ok) {
    end_reasoning();
    if (any_content_ ? !content_ends_line_ : ok) std::cout << "\n" << std::flush;
  }

 private:
  void end_reasoning() {
    if (!in_reasoning_) return;
    in_reasoning_ = false;
    if (reasoning_ends_line_) return;
    (reasoning_ == ReasoningOutput::kStdout ? std::cout : std::cerr) << "\n" << std::flush;
  }

  ReasoningOutput reasoning_;
  bool in_reasoning_ = false, reasoning_ends_line_ = true;
  bool any_content_ = false, content_ends_line_ = true;
};

}  // namespace

int run_generate(GlobalOptions g, const Args& args) {
  Options o = parse(g, args);
  auto stub = v1::Inference::NewStub(make_channel(g));
  grpc::ClientContext ctx;
  prepare_call(ctx, g, /*streaming=*/true);

  const Clock::time_point start = Clock::now();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;
  if (o.chat) {
    v1::ChatRequest req;
    if (o.system) {
      v1::ChatMessage& m = *req.add_messages();
      m.set_role("system");
      m.set_content(*o.system);
    }
    v1::ChatMessage& m = *req.add_messages();
    m.set_role("user");
    m.set_content(*o.prompt);
    fill_request(o.gen, req);
    if (o.logprobs) req.mutable_logprobs()->set_top_logprobs(*o.logprobs);
    reader = stub->Chat(&ctx, req);
  } else {
    v1::GenerateRequest req;
    req.set_text(*o.prompt);
    if (!o.add_special_tokens) req.set_add_special_tokens(false);
    fill_request(o.gen, req);
    if (o.logprobs) req.mutable_logprobs()->set_top_logprobs(*o.logprobs);
    reader = stub->Generate(&ctx, req);
  }

  TextPrinter printer(o.reasoning);
  StreamOutcome outcome = read_stream(*reader, start, [&](const v1::Delta& d) {
    if (o.json) std::cout << json_line(delta_json(d)) << std::endl;
    else printer.on_delta(d);
  });
  if (o.json) {
    if (outcome.finished) std::cout << json_line(finished_json(*outcome.finished)) << std::endl;
  } else {
    printer.finish(outcome.status.ok());
  }
  if (!outcome.status.ok()) return report_error(outcome.status);
  if (g.verbose) print_stream_summary(std::cerr, outcome);
  return kExitOk;
}

}  // namespace flint::client
