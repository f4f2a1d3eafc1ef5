// The generation options shared by `generate`, `chat` and `bench`: sampling,
// stopping and reasoning flags, and how they fill a GenerateRequest or a
// ChatRequest. Ranges are the server's to check (it answers INVALID_ARGUMENT);
// the client only checks that a value is a number of the field's type.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "client/cli.h"
#include "flint/v1/inference.pb.h"

namespace flint::client {

struct GenerationFlags {
  // Sampling; unset fields take the server's defaults.
  std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty;
  std::optional<int32_t> top_k;
  std::optional<uint64_t> seed;
  // Stopping.
  std::optional<int32_t> max_tokens;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  // Reasoning: think=false is ReasoningParams.enabled=false.
  bool think = true;
  std::optional<int32_t> reasoning_budget;
  int32_t priority = 0;
  std::string request_id;
};

extern const char* const kGenerationFlagsUsage;

// Consumes one generation flag at r's current argument; false if it is not one.
bool parse_generation_flag(ArgReader& r, GenerationFlags& f);

// Fills the sampling, stopping, reasoning, priority and request_id fields.
void fill_request(const GenerationFlags& f, v1::GenerateRequest& req);
void fill_request(const GenerationFlags& f, v1::ChatRequest& req);

}  // namespace flint::client
