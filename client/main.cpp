// flint: the command-line client of flintd. Parses the global options, then
// hands the rest of the command line to one subcommand.
#include <cstdlib>
#include <iostream>
#include <map>

#include "client/commands.h"

namespace {

using flint::client::Args;
using flint::client::GlobalOptions;

const char* const kUsage =
    "usage: flint [global options] COMMAND [options]\n"
    "The command-line client of flintd (gRPC API flint.v1).\n"
    "commands:\n"
    "  generate PROMPT         stream a completion (--chat: an assistant answer)\n"
    "  chat                    interactive conversation (reads lines from stdin)\n"
    "  tokenize TEXT           token ids of a text\n"
    "  detokenize ID...        text of token ids\n"
    "  info                    the served model and the server's limits\n"
    "  health                  grpc.health.v1 check; exit 0 only when SERVING\n"
    "  bench                   load generator: throughput and latency percentiles\n"
    "'flint COMMAND --help' describes a command.\n"
    "exit codes: 0 success, 1 an RPC failed (\"flint: CODE: message\" on stderr), 2 bad usage\n";

using Command = int (*)(GlobalOptions, const Args&);

const std::map<std::string, Command>& commands() {
  static const std::map<std::string, Command> table = {
      {"generate", flint::client::run_generate}, {"chat", flint::client::run_chat},
      {"tokenize", flint::client::run_tokenize}, {"detokenize", flint::client::run_detokenize},
      {"info", flint::client::run_info},         {"health", flint::client::run_health},
      {"bench", flint::client::run_bench},
  };
  return table;
}

}  // namespace

int main(int argc, char** argv) {
  GlobalOptions g;
  if (const char* key = std::getenv("FLINT_API_KEY")) g.api_key = key;  // --api-key overrides it
  flint::client::ArgReader r("", Args(argv + 1, argv + argc), kUsage);
  while (r.next()) {
    if (r.positional()) break;
    if (!r.global(g)) r.unknown();
  }
  if (!r.positional() || r.arg().empty()) {
    std::cerr << kUsage;
    return flint::client::kExitUsage;
  }
  std::string name = r.arg();
  Args rest = r.remaining();
  if (name == "help") {  // flint help [COMMAND]
    if (rest.empty()) r.help();
    name = rest.front();
    rest = {"--help"};
  }
  auto it = commands().find(name);
  if (it == commands().end()) r.usage_error("unknown command '" + name + "'");
  return it->second(g, rest);
}
