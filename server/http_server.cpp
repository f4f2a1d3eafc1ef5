// HttpServer: auth and drain in a pre-routing handler, an OpenAI error body for
// every failure (the error handler fills in httplib's own 404/405/413), and a Call
// per chat or completion request that turns the engine's events into one JSON
// answer or a stream of server-sent events.
#include "server/http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "common/error.h"
#include "flint/web/chat_page.h"
#include "server/metrics.h"
#include "server/openai_json.h"

namespace flint::server {

namespace {

using openai::HttpError;
using openai::Json;

// How long a stream waits for an event before it looks at the client again.
constexpr auto kPollInterval = std::chrono::milliseconds(100);
// A stream with nothing to say writes an SSE comment this often: a closed
// connection is only noticed when a write fails.
constexpr auto kKeepAliveInterval = std::chrono::seconds(1);
// How often a request answered as one JSON body checks that its client is still there.
constexpr auto kAnswerPollInterval = std::chrono::seconds(1);

void reply_error(httplib::Response& res, const HttpError& error) {
  res.status = error.status;
  res.set_content(openai::dump(openai::error_body(error)), "application/json");
}

void reply_json(httplib::Response& res, const Json& body) {
  res.status = 200;
  res.set_content(openai::dump(body), "application/json");
}

// The port and address of a socket end, as text ("127.0.0.1", 54321); nullopt
// for a socket that is not TCP over IPv4 or IPv6.
std::optional<std::pair<std::string, int>> endpoint_of(const sockaddr_storage& a) {
  char text[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
    return std::pair<std::string, int>(text, ntohs(in.sin_port));
  }
  if (a.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);
    inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    return std::pair<std::string, int>(text, ntohs(in6.sin6_port));
  }
  return std::nullopt;
}

// The socket `req` arrived on, found among this process's descriptors by its two
// ends (httplib 0.11 does not hand a handler its socket), or -1. The descriptor
// stays open while the handler runs: httplib closes it only after.
int connection_fd(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0') continue;
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof local, peer_len = sizeof peer;
    if (getsockname(int(fd), reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
        getpeername(int(fd), reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0)
      continue;
    const auto l = endpoint_of(local), p = endpoint_of(peer);
    if (l && p && l->second == req.local_port && p->second == req.remote_port && p->first == req.remote_addr) {
      found = int(fd);
      break;
    }
  }
  closedir(dir);
  return found;
}

// Whether the client closed its end or the connection broke. POLLRDHUP shows the
// peer's FIN even with unread bytes before it, such as a TLS close_notify.
bool peer_closed(int fd) {
  pollfd p{.fd = fd, .events = POLLRDHUP, .revents = 0};
  if (poll(&p, 1, 0) < 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

// flint_requests_total's status for a request the engine answered with `status`.
std::string_view status_label(const Status& status) {
  if (status.code == StatusCode::Cancelled) return "cancelled";
  if (status.code == StatusCode::DeadlineExceeded) return "deadline_exceeded";
  return http_status_label(status.ok() ? 200 : openai::from_status(status).status);
}

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

// One submitted chat or completion request. Owned by the handler (a JSON answer)
// or by the response's content provider (a stream); its end cancels the engine
// request if it is still running and counts the stream as done.
class HttpServer::Call {
 public:
  Call(HttpServer& server, std::shared_ptr<RequestStream> stream, PreparedRequest prepared, openai::ResponseHead head,
       openai::ResponseOptions options, const char* method, ApiKeys::Lease lease)
      : server_(server), stream_(std::move(stream)), prepared_(std::move(prepared)), head_(std::move(head)),
        options_(options), method_(method), lease_(std::move(lease)), last_write_(Clock::now()) {
    ++server_.active_streams_;
  }
  ~Call() {
    if (!finished_) server_.engine_.cancel(stream_->id());
    if (server_.options_.metrics) server_.options_.metrics->count(Api::Http, outcome_);
    --server_.active_streams_;
  }

  // Blocks until the final event; the answer or the error becomes the response.
  // While it waits, it looks at the connection each second: a client that closed
  // it cancels the request (its answer would go nowhere).
  void answer(const httplib::Request& req, httplib::Response& res) {
    openai::Answer answer;
    const int fd = connection_fd(req);
    Clock::time_point next_check = Clock::now() + kAnswerPollInterval;
    for (;;) {
      std::optional<StreamEvent> event = stream_->pop(kAnswerPollInterval);
      if (Clock::now() >= next_check) {
        next_check = Clock::now() + kAnswerPollInterval;
        if (fd >= 0 && peer_closed(fd)) {
          client_gone();
          return;
        }
      }
      if (!event) continue;
      if (auto* delta = std::get_if<StreamDelta>(&*event)) {
        delta->text = to_valid_utf8(delta->text);
        answer.add(*delta);
        continue;
      }
      const auto& final = std::get<StreamFinal>(*event);
      finish(final);
      if (!final.status.ok()) return reply_error(res, openai::from_status(final.status));
      return reply_json(res, openai::full_response(head_, answer, final, options_, token_bytes()));
    }
  }

  // One call of the chunked content provider: writes what the engine has (or a
  // keep-alive comment) and returns false when the client is gone.
  bool pump(httplib::DataSink& sink) {
    if (!started_) {
      started_ = true;
      if (head_.endpoint == openai::Endpoint::ChatCompletions && !write(sink, openai::sse_event(openai::role_chunk(head_))))
        return client_gone();
    }
    std::optional<StreamEvent> event = stream_->pop(kPollInterval);
    if (!event) {
      if (Clock::now() - last_write_ >= kKeepAliveInterval && !write(sink, ": keep-alive\n\n")) return client_gone();
      return true;
    }
    if (const auto* delta = std::get_if<StreamDelta>(&*event)) {
      const bool with_logprobs = options_.logprobs && !delta->logprobs.empty();
      if (delta->text.empty() && !with_logprobs) return true;  // marker ids only
      Json logprobs = with_logprobs ? openai::logprobs_json(head_.endpoint, delta->logprobs, options_.top_logprobs,
                                                            token_bytes())
                                    : Json();
      const Json chunk = openai::delta_chunk(head_, delta->channel, to_valid_utf8(delta->text), std::move(logprobs));
      return write(sink, openai::sse_event(chunk)) || client_gone();
    }
    const auto& final = std::get<StreamFinal>(*event);
    finish(final);
    std::string out;
    if (!final.status.ok()) {
      out = openai::sse_event(openai::error_body(openai::from_status(final.status)));
    } else {
      out = openai::sse_event(openai::finish_chunk(head_, final.reason));
      if (options_.include_usage) out += openai::sse_event(openai::usage_chunk(head_, final.usage));
      out += "data: [DONE]\n\n";
    }
    if (!write(sink, out)) return false;
    sink.done();
    return true;
  }

 private:
  bool write(httplib::DataSink& sink, const std::string& text) {
    if (!sink.is_writable() || !sink.write(text.data(), text.size())) return false;
    last_write_ = Clock::now();
    return true;
  }

  bool client_gone() {
    if (server_.options_.log_requests)
      std::fprintf(stderr, "flintd: %s %llu%s%s: the client went away\n", method_,
                   static_cast<unsigned long long>(stream_->id()), prepared_.request_id.empty() ? "" : " ",
                   prepared_.request_id.c_str());
    server_.engine_.cancel(stream_->id());
    return false;
  }

  void finish(const StreamFinal& final) {
    finished_ = true;
    outcome_ = status_label(final.status);
    if (server_.options_.log_requests)
      std::fprintf(stderr, "flintd: %s %llu%s%s: %s\n", method_, static_cast<unsigned long long>(stream_->id()),
                   prepared_.request_id.empty() ? "" : " ", prepared_.request_id.c_str(), describe(final).c_str());
  }

  openai::TokenBytes token_bytes() const {
    const Tokenizer* tokenizer = server_.model_.tokenizer;
    return [tokenizer](int32_t id) { return tokenizer->token_bytes(id); };
  }

  HttpServer& server_;
  std::shared_ptr<RequestStream> stream_;
  PreparedRequest prepared_;
  openai::ResponseHead head_;
  openai::ResponseOptions options_;
  const char* method_;
  ApiKeys::Lease lease_;  // counts this request against its API key's limit until it ends
  Clock::time_point last_write_;
  bool started_ = false, finished_ = false;
  // The status counted when the call ends; a call that ends without its final
  // event (the client went away, the server stopped) counts as cancelled.
  std::string_view outcome_ = "cancelled";
};

HttpServer::HttpServer(Engine& engine, const ServedModel& model, std::string model_name,
                       const std::atomic<bool>& serving, const HttpOptions& options)
    : engine_(engine), model_(model), model_name_(std::move(model_name)), serving_(serving), options_(options),
      created_(unix_seconds()) {
  if (const TlsConfig* tls = options_.tls) {
    auto https = std::make_unique<httplib::SSLServer>(
        tls->cert_path.c_str(), tls->key_path.c_str(), tls->client_ca_path.empty() ? nullptr : tls->client_ca_path.c_str());
    if (!https->is_valid()) fail("HTTPS: cannot use --tls-cert ", tls->cert_path, " and --tls-key ", tls->key_path);
    server_ = std::move(https);
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& s = *server_;
  const size_t num_threads = size_t(std::max(options_.num_threads, 1));
  s.new_task_queue = [num_threads] { return new httplib::ThreadPool(num_threads); };
  s.set_payload_max_length(options_.max_body_bytes);
  // An idle keep-alive connection holds its thread, and stop(), this long (httplib's default: 5 s).
  s.set_keep_alive_timeout(2);

  // A generation request refused before routing still counts in flint_requests_total.
  auto refuse_early = [this](const httplib::Request& req, httplib::Response& res, const HttpError& error) {
    if (options_.metrics && req.method == "POST" && (req.path == "/v1/chat/completions" || req.path == "/v1/completions"))
      options_.metrics->count(Api::Http, http_status_label(error.status));
    reply_error(res, error);
  };
  s.set_pre_routing_handler([this, refuse_early](const httplib::Request& req, httplib::Response& res) {
    if (!req.path.starts_with("/v1/")) return httplib::Server::HandlerResponse::Unhandled;
    if (options_.api_keys && options_.api_keys->enabled() &&
        !options_.api_keys->authenticate(req.get_header_value("Authorization"))) {
      res.set_header("WWW-Authenticate", "Bearer");
      refuse_early(req, res, {401, std::string(kMissingKeyMessage), "invalid_api_key"});
      return httplib::Server::HandlerResponse::Handled;
    }
    if (draining_) {
      refuse_early(req, res, {503, "the server is draining: it takes no new requests", ""});
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // httplib's own errors (no route, body too large, a malformed request) get a JSON body.
  const std::string too_large = "the request body is too large (at most " + std::to_string(options_.max_body_bytes) +
                                " bytes, --max-request-bytes)";
  s.set_error_handler(httplib::Server::HandlerWithResponse([too_large](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.is_chunked_content_provider_) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = res.status == 404   ? "no route " + req.method + " " + to_valid_utf8(req.path)
                          : res.status == 413 ? too_large
                                              : "HTTP error " + std::to_string(res.status);
    reply_error(res, {res.status, std::move(message), ""});
    return httplib::Server::HandlerResponse::Handled;
  }));
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr e) {
    std::string message = "internal error";
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      message += std::string(": ") + x.what();
    } catch (...) {
    }
    reply_error(res, {500, message, ""});
  });

  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(std::string(web::kChatPageHtml), "text/html; charset=utf-8");
  });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (serving_.load() && !draining_.load()) return reply_json(res, Json{{"status", "ok"}});
    reply_error(res, {503, draining_ ? "the server is draining" : "the engine loop is not making progress", ""});
  });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    reply_json(res, openai::models_list(model_name_, created_, model_.max_sequence_tokens));
  });
  s.Get("/v1/models/(.+)", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != model_name_)
      return reply_error(res, {404, "The model `" + to_valid_utf8(req.matches[1].str()) + "` does not exist",
                               "model_not_found"});
    reply_json(res, openai::model_object(model_name_, created_, model_.max_sequence_tokens));
  });
  s.Post("/v1/chat/completions",
         [this](const httplib::Request& req, httplib::Response& res) { generate(Kind::Chat, req, res); });
  s.Post("/v1/completions",
         [this](const httplib::Request& req, httplib::Response& res) { generate(Kind::Completion, req, res); });
  auto wrong_method = [](const char* allowed) {
    return [allowed](const httplib::Request& req, httplib::Response& res) {
      res.set_header("Allow", allowed);
      reply_error(res, {405, req.method + " " + req.path + " is not allowed; use " + allowed, ""});
    };
  };
  s.Get("/v1/chat/completions", wrong_method("POST"));
  s.Get("/v1/completions", wrong_method("POST"));
  s.Post("/v1/models", wrong_method("GET"));
  s.Post("/health", wrong_method("GET"));

  port_ = options_.port == 0 ? s.bind_to_any_port(options_.host)
                             : (s.bind_to_port(options_.host, options_.port) ? options_.port : -1);
  if (port_ <= 0)
    fail("cannot listen for HTTP on ", options_.host, ":", options_.port, " (in use, or not an address of this machine?)");
  auto listening_ended = std::make_shared<std::atomic<bool>>(false);
  thread_ = std::thread([this, listening_ended] {
    server_->listen_after_bind();
    *listening_ended = true;
  });
  // stop() only reaches a server that has started listening.
  while (!server_->is_running() && !*listening_ended) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

void HttpServer::generate(Kind kind, const httplib::Request& req, httplib::Response& res) {
  // Answered before the engine: counted here (a Call counts the rest as it ends).
  auto refuse = [&](const HttpError& error) {
    if (options_.metrics) options_.metrics->count(Api::Http, http_status_label(error.status));
    reply_error(res, error);
  };
  Json body;
  if (HttpError error = openai::parse_body(req.body, body); !error.ok()) return refuse(error);
  const std::string request_id = req.get_header_value("X-Request-Id");
  openai::ResponseOptions options;
  PreparedRequest prepared;
  HttpError error;
  Status status;
  try {
    if (kind == Kind::Chat) {
      v1::ChatRequest request;
      error = openai::parse_chat_request(body, model_name_, request, options);
      request.set_request_id(request_id);
      if (error.ok()) status = prepare_chat(request, model_, prepared);
    } else {
      v1::GenerateRequest request;
      error = openai::parse_completion_request(body, model_name_, request, options);
      request.set_request_id(request_id);
      if (error.ok()) status = prepare_generate(request, model_, prepared);
    }
  } catch (const Error& e) {  // the tokenizer refusing its input
    status = {StatusCode::InvalidArgument, e.what()};
  }
  if (!error.ok()) return refuse(error);
  if (!status.ok()) return refuse(openai::from_status(status));
  ApiKeys::Lease lease;
  if (ApiKeys* keys = options_.api_keys; keys && keys->enabled()) {
    ApiKeys::Key* key = keys->authenticate(req.get_header_value("Authorization"));  // known: pre-routing checked
    if (!key) return refuse({401, std::string(kMissingKeyMessage), "invalid_api_key"});
    auto acquired = keys->acquire(*key);
    if (!acquired) return refuse({429, key_limit_message(*key, keys->limit_of(*key)), "rate_limit_exceeded"});
    lease = std::move(*acquired);
  }
  SubmitResult submitted = engine_.submit(prepared.request);
  if (!submitted.status.ok()) return refuse(openai::from_status(submitted.status));
  if (!request_id.empty()) res.set_header("X-Request-Id", request_id);

  const auto endpoint = kind == Kind::Chat ? openai::Endpoint::ChatCompletions : openai::Endpoint::Completions;
  openai::ResponseHead head{openai::new_response_id(endpoint), unix_seconds(), model_name_, endpoint,
                            options.stream && options.include_usage};
  auto call = std::make_shared<Call>(*this, std::move(submitted.stream), std::move(prepared), std::move(head), options,
                                     kind == Kind::Chat ? "HTTP chat" : "HTTP completion", std::move(lease));
  if (!options.stream) return call->answer(req, res);
  // A stream notices a client that went away at its next write.
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider("text/event-stream",
                                   [call](size_t, httplib::DataSink& sink) { return call->pump(sink); });
}

}  // namespace flint::server
