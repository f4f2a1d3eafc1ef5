// The argument reader, the channel, deadlines and error reporting shared by
// every subcommand.
#include "client/cli.h"

#include <fstream>
#include <sstream>

#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <iostream>

namespace flint::client {

const char* const kGlobalOptionsUsage =
    "global options (before or after the command):\n"
    "  --server HOST:PORT      flintd's address (default 127.0.0.1:50051)\n"
    "  --timeout SECONDS       gRPC deadline of each call (default: none for streaming\n"
    "                          calls, 10 s for unary ones)\n"
    "  --api-key KEY           sent as \"authorization: Bearer KEY\" (default $FLINT_API_KEY)\n"
    "  --tls                   connect over TLS, trusting the system's CAs\n"
    "  --tls-ca PATH           connect over TLS, trusting the CAs in this PEM file\n"
    "  --tls-cert PATH, --tls-key PATH\n"
    "                          a client certificate and its key (mutual TLS)\n"
    "  --tls-server-name NAME  the name the server's certificate must hold (default: the host)\n"
    "  -v, --verbose           more detail\n"
    "  -h, --help              this help\n";

ArgReader::ArgReader(std::string command, std::vector<std::string> args, std::string usage)
    : command_(std::move(command)), usage_(std::move(usage)), args_(std::move(args)) {}

bool ArgReader::next() {
  inline_value_.reset();
  if (index_ >= args_.size()) return false;
  arg_ = args_[index_++];
  if (!after_dashes_ && arg_ == "--") {
    after_dashes_ = true;
    return next();
  }
  positional_ = after_dashes_ || arg_.size() < 2 || arg_[0] != '-';
  if (!positional_ && arg_.starts_with("--")) {
    size_t eq = arg_.find('=');
    if (eq != std::string::npos) {
      inline_value_ = arg_.substr(eq + 1);
      arg_.resize(eq);
    }
  }
  return true;
}

bool ArgReader::is(std::string_view name, std::string_view short_name) const {
  if (positional_) return false;
  return arg_ == name || (!short_name.empty() && arg_ == short_name);
}

std::string ArgReader::value() {
  if (inline_value_) {
    std::string v = *inline_value_;
    inline_value_.reset();
    return v;
  }
  if (index_ >= args_.size()) usage_error(arg_ + " needs a value");
  return args_[index_++];
}

double ArgReader::number() {
  std::string v = value();
  char* end = nullptr;
  double d = std::strtod(v.c_str(), &end);
  if (v.empty() || end != v.c_str() + v.size() || !std::isfinite(d))
    usage_error(arg_ + ": not a number: '" + v + "'");
  return d;
}

int64_t ArgReader::integer(int64_t min, int64_t max) {
  std::string v = value();
  char* end = nullptr;
  errno = 0;
  long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || end != v.c_str() + v.size() || errno == ERANGE)
    usage_error(arg_ + ": not an integer: '" + v + "'");
  if (n < min || n > max)
    usage_error(arg_ + ": " + v + " is outside [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  return n;
}

uint64_t ArgReader::unsigned_integer() {
  std::string v = value();
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || v[0] == '-' || end != v.c_str() + v.size() || errno == ERANGE)
    usage_error(arg_ + ": not an integer >= 0: '" + v + "'");
  return n;
}

bool ArgReader::global(GlobalOptions& g) {
  if (is("--server")) {
    g.server = value();
    if (g.server.empty()) usage_error("--server needs HOST:PORT");
  } else if (is("--timeout")) {
    double t = number();
    if (t <= 0) usage_error("--timeout must be > 0 seconds");
    g.timeout_s = t;
  } else if (is("--api-key")) {
    g.api_key = value();
  } else if (is("--tls")) {
    g.tls = true;
  } else if (is("--tls-ca") || is("--tls-cert") || is("--tls-key") || is("--tls-server-name")) {
    const std::string name = arg_;
    std::string v = value();
    if (v.empty()) usage_error(name + " needs a value");
    (name == "--tls-ca" ? g.tls_ca : name == "--tls-cert" ? g.tls_cert : name == "--tls-key" ? g.tls_key : g.tls_server_name) = v;
    g.tls = true;
  } else if (is("--verbose", "-v")) {
    g.verbose = true;
  } else if (is("--help", "-h")) {
    help();
  } else {
    return false;
  }
  return true;
}

void ArgReader::usage_error(const std::string& message) const {
  std::cerr << "flint: " << command_ << (command_.empty() ? "" : ": ") << message << "\n" << usage_;
  std::exit(kExitUsage);
}

void ArgReader::unknown() const {
  if (positional_) usage_error("unexpected argument '" + arg_ + "'");
  usage_error("unknown option " + arg_);
}

void ArgReader::help() const {
  std::cout << usage_ << "\n" << kGlobalOptionsUsage;
  std::exit(kExitOk);
}

namespace {

std::string read_pem(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  if (!in || s.str().empty()) {
    std::cerr << "flint: " << flag << " " << path << ": cannot read it\n";
    std::exit(kExitUsage);
  }
  return s.str();
}

}  // namespace

std::shared_ptr<grpc::Channel> make_channel(const GlobalOptions& g) {
  if (!g.tls) return grpc::CreateChannel(g.server, grpc::InsecureChannelCredentials());
  if (g.tls_cert.empty() != g.tls_key.empty()) {
    std::cerr << "flint: a client certificate needs both --tls-cert and --tls-key\n";
    std::exit(kExitUsage);
  }
  grpc::SslCredentialsOptions ssl;
  if (!g.tls_ca.empty()) ssl.pem_root_certs = read_pem("--tls-ca", g.tls_ca);
  if (!g.tls_cert.empty()) {
    ssl.pem_cert_chain = read_pem("--tls-cert", g.tls_cert);
    ssl.pem_private_key = read_pem("--tls-key", g.tls_key);
  }
  grpc::ChannelArguments args;
  if (!g.tls_server_name.empty()) args.SetSslTargetNameOverride(g.tls_server_name);
  return grpc::CreateCustomChannel(g.server, grpc::SslCredentials(ssl), args);
}

grpc::Status fetch_model_info(v1::Inference::Stub& stub, const GlobalOptions& g, v1::ModelInfo& info) {
  grpc::ClientContext ctx;
  prepare_call(ctx, g, /*streaming=*/false);
  return stub.GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
}

void prepare_call(grpc::ClientContext& ctx, const GlobalOptions& g, bool streaming) {
  if (!g.api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + g.api_key);
  std::optional<double> s = g.timeout_s;
  if (!s && !streaming) s = kDefaultUnaryTimeoutS;
  if (!s) return;
  auto d = std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(*s));
  ctx.set_deadline(std::chrono::system_clock::now() + d);
}

const char* status_code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN_STATUS";
  }
}

int report_error(const grpc::Status& status) {
  std::cerr << "flint: " << status_code_name(status.error_code()) << ": " << status.error_message() << "\n";
  return kExitFailure;
}

bool use_color(int fd) {
  return isatty(fd) && std::getenv("NO_COLOR") == nullptr;
}

}  // namespace flint::client
