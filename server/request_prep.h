// Request preparation: a flint.v1 GenerateRequest or ChatRequest checked field by
// field and turned into an EngineRequest (prompt tokens, sampling, stopping,
// reasoning), and engine stream events turned back into flint.v1 messages.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "engine/request.h"
#include "flint/v1/inference.pb.h"
#include "model/chat_template.h"
#include "model/tokenizer.h"

namespace flint::server {

// What preparing a request needs to know about the served model.
struct ServedModel {
  const Tokenizer* tokenizer = nullptr;
  const ChatTemplate* chat_template = nullptr;
  int32_t vocab_size = 0;
  int32_t max_sequence_tokens = 0;  // prompt + output one request may have
  int32_t max_prompt_tokens = 0;    // tokens one prompt may have (--max-prompt-tokens), 0: no limit of its own
};

// An engine request and what the response needs besides the engine's events.
struct PreparedRequest {
  EngineRequest request;
  uint64_t seed = 0;             // the one given, or the one drawn
  std::string request_id;        // the client's, echoed
  int32_t num_top_logprobs = 0;  // alternatives per token to report
  bool want_logprobs = false;
};

// Ok, or InvalidArgument naming the field and the rule it breaks.
Status prepare_generate(const v1::GenerateRequest& in, const ServedModel& model, PreparedRequest& out);
Status prepare_chat(const v1::ChatRequest& in, const ServedModel& model, PreparedRequest& out);

// The conversation as ChatMessages; InvalidArgument on an empty list or an unknown role.
Status chat_messages(const google::protobuf::RepeatedPtrField<v1::ChatMessage>& in, std::vector<ChatMessage>& out);
// Template options from the request (date defaults to today, UTC).
ChatOptions chat_options(const v1::ChatTemplateOptions& in, bool enable_thinking);

// `s` with every invalid or truncated UTF-8 sequence replaced by U+FFFD: one
// for each maximal broken start of a character (as WHATWG's decoder does).
std::string to_valid_utf8(std::string_view s);

// An engine delta as a flint.v1 Delta (text made valid UTF-8, logprobs trimmed
// to what the request asked for).
void to_proto(const StreamDelta& in, const PreparedRequest& prepared, const Tokenizer& tokenizer, v1::Delta& out);
// The final event of a request that ended normally (status Ok).
void to_proto(const StreamFinal& in, const PreparedRequest& prepared, v1::Finished& out);

// For the log line of a finished request: "stop, 12+40 tokens (0 cached, 0 reasoning),
// ttft 31.0 ms, total 802.5 ms", and ": message" when its status is not Ok.
std::string describe(const StreamFinal& final);

}  // namespace flint::server
