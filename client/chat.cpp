// `flint chat`: a conversation on stdin/stdout. Each line is a user message
// (or a /command); the reply streams back and joins the history. Ctrl-C
// cancels the reply in progress, not the program. Works on piped stdin too:
// no prompt is printed then, so the output holds only the replies.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <mutex>
#include <sstream>
#include <thread>
#include <type_traits>

#include "client/commands.h"
#include "client/print.h"
#include "client/request_flags.h"
#include "client/stream.h"

namespace flint::client {
namespace {

const char* const kUsage =
    "usage: flint chat [options]\n"
    "A conversation with the model: each line of stdin is a user message.\n"
    "  --system TEXT           the system message\n"
    "  --hide-reasoning        do not show the model's thinking\n"
    "  -v                      after each reply: finish reason, tokens, timings (stderr)\n"
    "In the chat: /help lists the commands; Ctrl-C cancels a reply; /quit or Ctrl-D leaves.\n";

const char* const kCommandsHelp =
    "/reset                  forget the conversation (the system message stays)\n"
    "/system [TEXT]          set the system message (none: remove it)\n"
    "/set KEY VALUE          temperature, top_p, top_k, min_p, max_tokens, seed,\n"
    "                        think on|off, budget N, reasoning show|hide\n"
    "/set KEY                back to the server's default\n"
    "/show                   the current parameters\n"
    "/help                   this list\n"
    "/quit                   leave (also Ctrl-D)\n";

struct ChatState {
  GenerationFlags gen;
  std::optional<std::string> system;
  std::vector<v1::ChatMessage> history;
  bool show_reasoning = true;
};

// SIGINT is blocked in every thread (call before gRPC starts any) and taken by
// one thread with sigwait: during a reply it cancels the call; at the prompt
// it prints a hint. No work happens inside a signal handler.
class InterruptWatcher {
 public:
  InterruptWatcher() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this] { watch(); });
  }
  ~InterruptWatcher() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    pthread_kill(thread_.native_handle(), SIGINT);
    thread_.join();
  }
  // The call Ctrl-C cancels; nullptr between calls.
  void set_call(grpc::ClientContext* ctx) {
    std::lock_guard lock(mu_);
    call_ = ctx;
    if (ctx) cancelled_ = false;
  }
  // Whether Ctrl-C cancelled the last call.
  bool cancelled() {
    std::lock_guard lock(mu_);
    return cancelled_;
  }

 private:
  void watch() {
    for (;;) {
      int sig = 0;
      if (sigwait(&set_, &sig) != 0) continue;
      std::lock_guard lock(mu_);
      if (stopping_) return;
      if (call_) {
        call_->TryCancel();
        cancelled_ = true;
      } else if (isatty(STDIN_FILENO)) {
        std::cout << "\n(/quit or Ctrl-D to leave)\n>>> " << std::flush;
      } else {
        std::_Exit(130);
      }
    }
  }

  sigset_t set_;
  std::thread thread_;
  std::mutex mu_;
  grpc::ClientContext* call_ = nullptr;
  bool cancelled_ = false, stopping_ = false;
};

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

template <class T>
std::optional<std::string> set_number(std::optional<T>& field, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  if constexpr (std::is_floating_point_v<T>) {
    double d = std::strtod(v.c_str(), &end);
    if (end == v.c_str() || *end != '\0') return "not a number: '" + v + "'";
    field = T(d);
  } else if constexpr (std::is_unsigned_v<T>) {
    unsigned long long n = std::strtoull(v.c_str(), &end, 10);
    if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE) return "not an integer >= 0: '" + v + "'";
    field = T(n);
  } else {
    long long n = std::strtoll(v.c_str(), &end, 10);
    if (end == v.c_str() || *end != '\0' || errno == ERANGE || n < std::numeric_limits<T>::min() ||
        n > std::numeric_limits<T>::max())
      return "not an integer: '" + v + "'";
    field = T(n);
  }
  return std::nullopt;
}

// "/set KEY [VALUE]": nullopt on success, else what was wrong.
std::optional<std::string> set_param(ChatState& s, const std::string& key, const std::string& v) {
  GenerationFlags& g = s.gen;
  const bool reset = v.empty();
  auto on_off = [&](const char* on, const char* off) -> std::optional<bool> {
    if (v == on || v == "true" || v == "1") return true;
    if (v == off || v == "false" || v == "0") return false;
    return std::nullopt;
  };
  auto number = [&](auto& field) -> std::optional<std::string> {
    if (reset) {
      field.reset();
      return std::nullopt;
    }
    return set_number(field, v);
  };
  if (key == "temperature") return number(g.temperature);
  if (key == "top_p") return number(g.top_p);
  if (key == "top_k") return number(g.top_k);
  if (key == "min_p") return number(g.min_p);
  if (key == "max_tokens") return number(g.max_tokens);
  if (key == "seed") return number(g.seed);
  if (key == "budget") return number(g.reasoning_budget);
  if (key == "think") {
    std::optional<bool> b = reset ? std::optional<bool>(true) : on_off("on", "off");
    if (!b) return "think takes on or off";
    g.think = *b;
    return std::nullopt;
  }
  if (key == "reasoning") {
    std::optional<bool> b = reset ? std::optional<bool>(true) : on_off("show", "hide");
    if (!b) return "reasoning takes show or hide";
    s.show_reasoning = *b;
    return std::nullopt;
  }
  return "unknown parameter '" + key + "' (/help lists them)";
}

void show(const ChatState& s, std::ostream& os) {
  auto opt = [](const auto& v) {
    std::ostringstream o;
    if (v) o << *v;
    else o << "default";
    return o.str();
  };
  const GenerationFlags& g = s.gen;
  os << "temperature " << opt(g.temperature) << ", top_p " << opt(g.top_p) << ", top_k " << opt(g.top_k)
     << ", min_p " << opt(g.min_p) << ", max_tokens " << opt(g.max_tokens) << ", seed " << opt(g.seed) << "\n"
     << "think " << (g.think ? "on" : "off") << ", budget " << opt(g.reasoning_budget) << ", reasoning "
     << (s.show_reasoning ? "show" : "hide") << "\n"
     << "system: " << (s.system ? *s.system : "(none)") << "\n"
     << "history: " << s.history.size() << " messages\n";
}

// Prints a reply as it streams: a "thinking: " block (dimmed on a terminal),
// then the answer. Returns the answer's text.
class ReplyPrinter {
 public:
  explicit ReplyPrinter(bool show_reasoning) : show_reasoning_(show_reasoning), dim_{use_color(STDOUT_FILENO)} {}

  void on_delta(const v1::Delta& d) {
    if (d.text().empty()) return;
    if (d.channel() == v1::CHANNEL_REASONING) {
      if (!show_reasoning_) return;
      if (!in_reasoning_) std::cout << dim_.begin() << "thinking: ";
      else std::cout << dim_.begin();
      std::cout << d.text() << dim_.end() << std::flush;
      in_reasoning_ = true;
      at_line_start_ = d.text().back() == '\n';
      return;
    }
    if (in_reasoning_) {
      std::cout << (at_line_start_ ? "\n" : "\n\n");
      in_reasoning_ = false;
    }
    answer_ += d.text();
    std::cout << d.text() << std::flush;
    at_line_start_ = d.text().back() == '\n';
  }
  void end_line() {
    if (!at_line_start_) std::cout << "\n";
    std::cout << std::flush;
  }
  const std::string& answer() const { return answer_; }

 private:
  bool show_reasoning_;
  Dim dim_;
  bool in_reasoning_ = false, at_line_start_ = true;
  std::string answer_;
};

v1::ChatMessage message(const std::string& role, const std::string& content) {
  v1::ChatMessage m;
  m.set_role(role);
  m.set_content(content);
  return m;
}

enum class ReplyResult { kOk, kCancelled, kFailed };

ReplyResult reply(ChatState& s, v1::Inference::Stub& stub, const GlobalOptions& g, InterruptWatcher& watcher,
                  const std::string& user_text) {
  v1::ChatRequest req;
  if (s.system) *req.add_messages() = message("system", *s.system);
  for (const v1::ChatMessage& m : s.history) *req.add_messages() = m;
  *req.add_messages() = message("user", user_text);
  fill_request(s.gen, req);

  grpc::ClientContext ctx;
  prepare_call(ctx, g, /*streaming=*/true);
  ReplyPrinter printer(s.show_reasoning);
  watcher.set_call(&ctx);
  const Clock::time_point start = Clock::now();
  auto reader = stub.Chat(&ctx, req);
  StreamOutcome outcome = read_stream(*reader, start, [&](const v1::Delta& d) { printer.on_delta(d); });
  watcher.set_call(nullptr);
  const bool cancelled = watcher.cancelled();
  printer.end_line();

  if (cancelled && outcome.status.error_code() == grpc::StatusCode::CANCELLED) {
    std::cout << "(cancelled)\n" << std::flush;
    return ReplyResult::kCancelled;
  }
  if (!outcome.status.ok()) {
    report_error(outcome.status);
    return ReplyResult::kFailed;
  }
  if (g.verbose) print_stream_summary(std::cerr, outcome);
  s.history.push_back(message("user", user_text));
  s.history.push_back(message("assistant", printer.answer()));
  return ReplyResult::kOk;
}

}  // namespace

int run_chat(GlobalOptions g, const Args& args) {
  ChatState s;
  ArgReader r("chat", args, std::string(kUsage) + "\n" + kGenerationFlagsUsage);
  while (r.next()) {
    if (r.global(g) || parse_generation_flag(r, s.gen)) continue;
    if (r.is("--system")) s.system = r.value();
    else if (r.is("--hide-reasoning")) s.show_reasoning = false;
    else r.unknown();
  }

  InterruptWatcher watcher;  // before gRPC starts its threads
  auto stub = v1::Inference::NewStub(make_channel(g));
  v1::ModelInfo info;
  if (grpc::Status status = fetch_model_info(*stub, g, info); !status.ok()) return report_error(status);
  const bool interactive = isatty(STDIN_FILENO);
  if (interactive)
    std::cout << "flint chat: " << info.name() << " at " << g.server << " (/help for commands, Ctrl-D to leave)\n";

  bool any_failed = false;
  std::string line;
  for (;;) {
    if (interactive) std::cout << ">>> " << std::flush;
    if (!std::getline(std::cin, line)) {
      if (interactive) std::cout << "\n";
      break;
    }
    line = trim(line);
    if (line.empty()) continue;
    if (line[0] != '/') {
      any_failed |= reply(s, *stub, g, watcher, line) == ReplyResult::kFailed;
      continue;
    }
    std::istringstream words(line);
    std::string cmd, key;
    words >> cmd;
    if (cmd == "/quit" || cmd == "/exit" || cmd == "/bye") break;
    if (cmd == "/help") {
      std::cout << kCommandsHelp;
    } else if (cmd == "/reset") {
      s.history.clear();
      if (interactive) std::cout << "(conversation cleared)\n";
    } else if (cmd == "/system") {
      std::string text = trim(line.substr(cmd.size()));
      if (text.empty()) s.system.reset();
      else s.system = text;
    } else if (cmd == "/set") {
      std::string value;
      words >> key;
      std::getline(words, value);
      if (key.empty()) std::cerr << "flint: /set KEY [VALUE] (/help lists the keys)\n";
      else if (auto err = set_param(s, key, trim(value))) std::cerr << "flint: /set: " << *err << "\n";
    } else if (cmd == "/show") {
      show(s, std::cout);
    } else {
      std::cerr << "flint: unknown command " << cmd << " (/help lists them)\n";
    }
    std::cout << std::flush;
  }
  return any_failed ? kExitFailure : kExitOk;
}

}  // namespace flint::client
