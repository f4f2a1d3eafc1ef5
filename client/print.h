// How `flint` shows API messages: readable text for people, one JSON object
// per line for scripts (field names as in inference.proto, enums as short
// lowercase words: "stop", "content").
#pragma once
#include <nlohmann/json.hpp>

#include <ostream>
#include <string>

#include "client/stream.h"
#include "flint/v1/inference.pb.h"

namespace flint::client {

using Json = nlohmann::ordered_json;  // keys in the order written

const char* finish_reason_name(v1::FinishReason reason);  // "stop", "length"
const char* channel_name(v1::Channel channel);            // "content", "reasoning"

// {"delta": {"text", "channel", "token_ids"[, "logprobs"]}}
Json delta_json(const v1::Delta& delta);
// {"finished": {"reason", "matched_stop", "usage", "timings", "seed", "request_id"}}
Json finished_json(const v1::Finished& finished);
Json model_info_json(const v1::ModelInfo& info);

// One line of compact JSON; bytes that are not UTF-8 become U+FFFD.
std::string json_line(const Json& j);

// "name: value" lines.
void print_model_info(std::ostream& os, const v1::ModelInfo& info);

// The finish of a stream for -v: reason, token counts, server and client timings.
void print_stream_summary(std::ostream& os, const StreamOutcome& outcome);

// ANSI dim on/off, or nothing when colour is off for that stream.
struct Dim {
  bool on;
  const char* begin() const { return on ? "\x1b[2m" : ""; }
  const char* end() const { return on ? "\x1b[0m" : ""; }
};

}  // namespace flint::client
