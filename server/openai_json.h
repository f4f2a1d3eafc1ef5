// The OpenAI-compatible HTTP API's JSON: request bodies mapped onto flint.v1
// messages (prepare_chat / prepare_generate then check them exactly as for gRPC),
// and the response objects, stream chunks and error bodies built from engine events.
//
// Request fields read (any other field is ignored, as OpenAI SDKs send extras;
// null is the same as absent):
//   both:  model (the served name; another is 404 model_not_found), stream,
//          stream_options.include_usage, temperature, top_p, top_k (-1 or 0: off),
//          min_p, presence_penalty, frequency_penalty, repetition_penalty,
//          seed (-1: random), max_tokens, max_completion_tokens (wins over max_tokens),
//          stop (string or array), stop_token_ids, ignore_eos, n (must be 1),
//          priority, reasoning {enabled: bool, budget_tokens: int} (flint.v1's
//          ReasoningParams), user (ignored)
//   chat:  messages [{role: system|developer|user|assistant, content: string, null or
//          [{type: "text", text}]}] (developer is system; text parts joined by "\n"),
//          logprobs: bool, top_logprobs, chat_template_kwargs.enable_thinking
//          (as reasoning.enabled, which wins when both are given)
//   completions: prompt (a string, token ids, or an array holding one of either),
//          logprobs: int (alternatives per token), add_special_tokens, best_of (1),
//          echo (false), suffix (empty)
// Responses put reasoning text in reasoning_content (DeepSeek/vLLM), beside
// content (chat) or text (completions).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/request.h"
#include "flint/v1/inference.pb.h"

namespace flint::server::openai {

using Json = nlohmann::ordered_json;  // keys in the order written, as OpenAI sends them

enum class Endpoint { ChatCompletions, Completions };

// An HTTP error as OpenAI reports it; status 200 is no error.
struct HttpError {
  int status = 200;
  std::string message;
  std::string code;  // OpenAI's error code ("model_not_found"); empty: null
  bool ok() const { return status == 200; }
};

// What shaping the response needs besides the proto request.
struct ResponseOptions {
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with usage
  bool logprobs = false;       // report each token's logprob
  int32_t top_logprobs = 0;    // and this many alternatives
};

// The HTTP body as JSON; 400 when it is not: malformed, or a number past double's
// range (nlohmann throws out_of_range for 1e400, not parse_error).
HttpError parse_body(std::string_view body, Json& out);

// Body → request. 400 for a field of the wrong type or an unsupported value
// (n > 1, non-text content parts), 404 for another model's name.
HttpError parse_chat_request(const Json& body, std::string_view served_model, v1::ChatRequest& out,
                             ResponseOptions& options);
HttpError parse_completion_request(const Json& body, std::string_view served_model, v1::GenerateRequest& out,
                                   ResponseOptions& options);

// An engine status as HTTP: 400, 429, 503, 504, 500; a prepare_* message has its
// proto field names ("sampling.temperature") put as the JSON's ("temperature").
HttpError from_status(const Status& status);
// {"error": {"message", "type", "param": null, "code"}}; type from the status
// (invalid_request_error, authentication_error, not_found_error, rate_limit_error,
// service_unavailable, server_error).
Json error_body(const HttpError& error);

// What every response object and chunk of one request shares.
struct ResponseHead {
  std::string id;  // chatcmpl-… or cmpl-…
  int64_t created = 0;  // Unix seconds
  std::string model;
  Endpoint endpoint = Endpoint::ChatCompletions;
  bool include_usage = false;  // chunks carry "usage": null until the usage chunk
};
// A fresh id with the endpoint's prefix and 24 random hex digits.
std::string new_response_id(Endpoint endpoint);

// The bytes of a token id (Tokenizer::token_bytes).
using TokenBytes = std::function<std::string(int32_t)>;

Json usage_json(const Usage& usage);
const char* finish_reason(FinishReason reason);  // "stop" or "length"
// Chat: {"content": [{token, logprob, bytes, top_logprobs}]}; completions:
// {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}]}. At most
// `num_top` alternatives per token.
Json logprobs_json(Endpoint endpoint, const std::vector<TokenLogprobs>& logprobs, int32_t num_top,
                   const TokenBytes& token_bytes);

// Stream chunks. Chat's first chunk: delta {role: "assistant", content: ""}.
Json role_chunk(const ResponseHead& head);
// Text of one channel: delta {content} or {reasoning_content} (chat), text or
// reasoning_content (completions); `logprobs` null or from logprobs_json.
Json delta_chunk(const ResponseHead& head, Channel channel, const std::string& text, Json logprobs);
// The last choice chunk: an empty delta and the finish reason.
Json finish_chunk(const ResponseHead& head, FinishReason reason);
// With include_usage, after finish_chunk: "choices": [] and the usage.
Json usage_chunk(const ResponseHead& head, const Usage& usage);

// A whole answer, for a response that does not stream.
struct Answer {
  std::string content, reasoning;
  std::vector<TokenLogprobs> logprobs;
  void add(const StreamDelta& delta);
};
// chat.completion or text_completion, with usage.
Json full_response(const ResponseHead& head, const Answer& answer, const StreamFinal& final,
                   const ResponseOptions& options, const TokenBytes& token_bytes);

// GET /v1/models: a list of one model.
Json models_list(const std::string& model, int64_t created, int32_t max_model_len);
Json model_object(const std::string& model, int64_t created, int32_t max_model_len);

// JSON text; invalid UTF-8 (never expected) is replaced, not thrown on.
std::string dump(const Json& value);
// One server-sent event: "data: {json}\n\n".
std::string sse_event(const Json& value);

}  // namespace flint::server::openai
