// The subcommands of `flint`. Each parses its own arguments (global options
// included, which may follow the command) and returns the exit code.
#pragma once
#include <string>
#include <vector>

#include "client/cli.h"

namespace flint::client {

using Args = std::vector<std::string>;

int run_generate(GlobalOptions g, const Args& args);    // generate.cpp
int run_chat(GlobalOptions g, const Args& args);        // chat.cpp
int run_bench(GlobalOptions g, const Args& args);       // bench.cpp
int run_tokenize(GlobalOptions g, const Args& args);    // unary.cpp
int run_detokenize(GlobalOptions g, const Args& args);  // unary.cpp
int run_info(GlobalOptions g, const Args& args);        // unary.cpp
int run_health(GlobalOptions g, const Args& args);      // unary.cpp

}  // namespace flint::client
