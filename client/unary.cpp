// The one-call subcommands: tokenize, detokenize, info, health.
#include <chrono>
#include <thread>
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <limits>

#include "client/commands.h"
#include "client/print.h"
#include "flint/v1/inference.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace flint::client {
namespace {

const char* const kTokenizeUsage =
    "usage: flint tokenize [options] TEXT\n"
    "Prints TEXT's token ids on one line (with -v: one line per token, id and token).\n"
    "  --no-special            no BOS (add_special_tokens=false)\n"
    "  --chat                  TEXT is one user message, rendered with the chat template\n"
    "  --system TEXT           a system message before it (with --chat)\n"
    "  --json                  {\"token_ids\", \"tokens\", \"text\"}\n";

const char* const kDetokenizeUsage =
    "usage: flint detokenize [options] [ID...]\n"
    "Prints the text of token ids (read from stdin when none are given).\n"
    "  --skip-special          leave out control tokens such as <|im_end|>\n";

const char* const kInfoUsage =
    "usage: flint info [--json]\n"
    "Prints the model the server serves and its limits.\n";

const char* const kHealthUsage =
    "usage: flint health [--service NAME] [--wait SECONDS]\n"
    "Asks grpc.health.v1.Health/Check; prints SERVING, NOT_SERVING, ...\n"
    "Exits 0 only when SERVING.\n"
    "  --service NAME          the service to ask about (default \"\": the whole server)\n"
    "  --wait SECONDS          ask again every 0.2 s until SERVING or SECONDS have passed\n"
    "                          (for scripts that start flintd; default 0: ask once)\n";

}  // namespace

int run_tokenize(GlobalOptions g, const Args& args) {
  ArgReader r("tokenize", args, kTokenizeUsage);
  std::optional<std::string> text, system;
  bool chat = false, json = false, add_special_tokens = true;
  while (r.next()) {
    if (r.global(g)) continue;
    if (r.is("--no-special")) add_special_tokens = false;
    else if (r.is("--chat")) chat = true;
    else if (r.is("--system")) system = r.value();
    else if (r.is("--json")) json = true;
    else if (r.positional() && !text) text = r.arg();
    else r.unknown();
  }
  if (!text) r.usage_error("TEXT is required");
  if (system && !chat) r.usage_error("--system needs --chat");

  v1::TokenizeRequest req;
  if (chat) {
    if (system) {
      v1::ChatMessage& m = *req.add_messages();
      m.set_role("system");
      m.set_content(*system);
    }
    v1::ChatMessage& m = *req.add_messages();
    m.set_role("user");
    m.set_content(*text);
  } else {
    req.set_text(*text);
  }
  if (!add_special_tokens) req.set_add_special_tokens(false);

  auto stub = v1::Inference::NewStub(make_channel(g));
  grpc::ClientContext ctx;
  prepare_call(ctx, g, /*streaming=*/false);
  v1::TokenizeResponse resp;
  grpc::Status status = stub->Tokenize(&ctx, req, &resp);
  if (!status.ok()) return report_error(status);

  if (json) {
    Json j = {{"token_ids", std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end())},
                        {"tokens", std::vector<std::string>(resp.tokens().begin(), resp.tokens().end())},
                        {"text", resp.text()}};
    std::cout << json_line(j) << "\n";
  } else if (g.verbose) {
    for (int i = 0; i < resp.token_ids_size(); ++i)
      std::cout << resp.token_ids(i) << "\t" << (i < resp.tokens_size() ? resp.tokens(i) : "") << "\n";
    std::cerr << resp.token_ids_size() << " tokens\n";
  } else {
    for (int i = 0; i < resp.token_ids_size(); ++i) std::cout << (i ? " " : "") << resp.token_ids(i);
    std::cout << "\n";
  }
  return kExitOk;
}

int run_detokenize(GlobalOptions g, const Args& args) {
  ArgReader r("detokenize", args, kDetokenizeUsage);
  v1::DetokenizeRequest req;
  bool any_id = false;
  auto add_id = [&](const std::string& word) {
    char* end = nullptr;
    errno = 0;
    long long id = std::strtoll(word.c_str(), &end, 10);
    if (word.empty() || end != word.c_str() + word.size() || errno == ERANGE ||
        id < std::numeric_limits<int32_t>::min() || id > std::numeric_limits<int32_t>::max())
      r.usage_error("not a token id: '" + word + "'");
    req.add_token_ids(int32_t(id));
    any_id = true;
  };
  while (r.next()) {
    if (r.global(g)) continue;
    if (r.is("--skip-special")) req.set_skip_special_tokens(true);
    else if (r.positional() || r.arg().find_first_not_of("-0123456789") == std::string::npos) add_id(r.arg());
    else r.unknown();
  }
  if (!any_id) {
    for (std::string word; std::cin >> word;) add_id(word);
  }

  auto stub = v1::Inference::NewStub(make_channel(g));
  grpc::ClientContext ctx;
  prepare_call(ctx, g, /*streaming=*/false);
  v1::DetokenizeResponse resp;
  grpc::Status status = stub->Detokenize(&ctx, req, &resp);
  if (!status.ok()) return report_error(status);
  std::cout << resp.text() << "\n";
  return kExitOk;
}

int run_info(GlobalOptions g, const Args& args) {
  ArgReader r("info", args, kInfoUsage);
  bool json = false;
  while (r.next()) {
    if (r.global(g)) continue;
    if (r.is("--json")) json = true;
    else r.unknown();
  }
  auto stub = v1::Inference::NewStub(make_channel(g));
  v1::ModelInfo info;
  if (grpc::Status status = fetch_model_info(*stub, g, info); !status.ok()) return report_error(status);
  if (json) std::cout << json_line(model_info_json(info)) << "\n";
  else print_model_info(std::cout, info);
  return kExitOk;
}

int run_health(GlobalOptions g, const Args& args) {
  ArgReader r("health", args, kHealthUsage);
  grpc::health::v1::HealthCheckRequest req;
  double wait_s = 0;
  while (r.next()) {
    if (r.global(g)) continue;
    if (r.is("--service")) req.set_service(r.value());
    else if (r.is("--wait")) wait_s = r.number();
    else r.unknown();
  }
  auto stub = grpc::health::v1::Health::NewStub(make_channel(g));
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                              std::chrono::duration<double>(std::max(0.0, wait_s)));
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status status;
  while (true) {
    grpc::ClientContext ctx;
    prepare_call(ctx, g, /*streaming=*/false);
    resp.Clear();
    status = stub->Check(&ctx, req, &resp);
    const bool serving = status.ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    if (serving || std::chrono::steady_clock::now() >= give_up) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (!status.ok()) return report_error(status);
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()) << "\n";
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk : kExitFailure;
}

}  // namespace flint::client
