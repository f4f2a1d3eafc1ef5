// What every subcommand of `flint` shares: the global options (server address,
// deadline, verbosity), the argument reader, the channel, and one way to
// report a failed RPC.
#pragma once
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flint/v1/inference.grpc.pb.h"

namespace flint::client {

// Exit codes: 0 success, 1 an RPC or the server failed, 2 bad command line.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

struct GlobalOptions {
  std::string server = "127.0.0.1:50051";  // HOST:PORT
  // --timeout: the gRPC deadline of every call, in seconds. Unset: streaming
  // calls have none and unary calls get kDefaultUnaryTimeoutS.
  std::optional<double> timeout_s;
  bool verbose = false;
  std::string api_key;  // --api-key or $FLINT_API_KEY: sent as "authorization: Bearer <key>"
  // TLS: on with --tls or any of the files. tls_ca "": the system's roots.
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key;  // cert and key: a client certificate, for mutual TLS
  std::string tls_server_name;            // the name the server's certificate must carry, when not the host's
};
inline constexpr double kDefaultUnaryTimeoutS = 10.0;

// The usage text shared by every subcommand's --help.
extern const char* const kGlobalOptionsUsage;

// Walks a subcommand's arguments. Options are "--name VALUE" or "--name=VALUE";
// anything else (and everything after "--") is positional.
class ArgReader {
 public:
  // command: "generate" etc., for messages; usage: printed by --help and on errors.
  ArgReader(std::string command, std::vector<std::string> args, std::string usage);

  bool next();  // moves to the next argument; false when none is left
  const std::string& arg() const { return arg_; }
  bool positional() const { return positional_; }
  // Is the current argument this option? short_name is e.g. "-v"; may be empty.
  bool is(std::string_view name, std::string_view short_name = {}) const;

  std::string value();                              // the option's value
  double number();                                  // a finite number
  int64_t integer(int64_t min, int64_t max);        // an integer in [min, max]
  uint64_t unsigned_integer();                      // an integer >= 0

  // The arguments after the current one, untouched.
  std::vector<std::string> remaining() const { return {args_.begin() + long(index_), args_.end()}; }

  // Consumes --server, --timeout, --api-key, the --tls options, -v/--verbose and
  // -h/--help (prints usage, exits 0).
  bool global(GlobalOptions& g);

  [[noreturn]] void usage_error(const std::string& message) const;  // exit 2
  [[noreturn]] void unknown() const;  // the current argument is not understood
  [[noreturn]] void help() const;     // usage to stdout, exit 0

 private:
  std::string command_, usage_;
  std::vector<std::string> args_;
  size_t index_ = 0;
  std::string arg_;
  std::optional<std::string> inline_value_;  // from --name=value
  bool positional_ = false, after_dashes_ = false;
};

std::shared_ptr<grpc::Channel> make_channel(const GlobalOptions& g);

// Plaintext, or TLS from the --tls options; exits 2 when a TLS file cannot be read.
// Sets the call's deadline from --timeout (or the unary default) and its API key.
void prepare_call(grpc::ClientContext& ctx, const GlobalOptions& g, bool streaming);

// GetModelInfo under the unary deadline.
grpc::Status fetch_model_info(v1::Inference::Stub& stub, const GlobalOptions& g, v1::ModelInfo& info);

// "INVALID_ARGUMENT" etc.
const char* status_code_name(grpc::StatusCode code);
// Prints "flint: CODE: message" to stderr and returns kExitFailure.
int report_error(const grpc::Status& status);

// Whether colour escapes may go to this file descriptor (a tty, NO_COLOR unset).
bool use_color(int fd);

}  // namespace flint::client
