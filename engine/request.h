// The engine's request types: what a frontend submits (EngineRequest), the status
// codes it gets back, and RequestStream, the channel of deltas and one final event.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/sampler.h"

namespace flint {

using Clock = std::chrono::steady_clock;

// The engine's status codes; the server maps them onto gRPC and HTTP codes.
enum class StatusCode {
  Ok,
  InvalidArgument,    // bad parameters, prompt over the context
  ResourceExhausted,  // the waiting queue is full
  DeadlineExceeded,
  Cancelled,
  Unavailable,        // shutting down
  Internal,
};

const char* to_string(StatusCode code);

struct Status {
  StatusCode code = StatusCode::Ok;
  std::string message;
  bool ok() const { return code == StatusCode::Ok; }
};

struct StoppingCriteria {
  int32_t max_tokens = 16;               // output tokens, >= 1
  std::vector<std::string> stop;         // on the content text only (not reasoning); the match is not emitted
  std::vector<int32_t> stop_token_ids;   // ends with reason Stop; the token is not emitted
  bool ignore_eos = false;               // when set, end-of-generation ids do not stop
};

// Which part of a reasoning model's answer a delta belongs to.
enum class Channel { Content, Reasoning };

const char* to_string(Channel channel);

// How a request's output splits into reasoning and content. With an empty think_end
// (a model that does not think, or a split the client turned off) all is content.
// The split works on the detokenized text (engine/reasoning.h): output that starts
// with think_start (after optional whitespace) opens the block, as does
// starts_in_reasoning; text up to think_end is reasoning, text after it content;
// the markers' text is in neither channel. Markers need a tokenizer; think_start,
// starts_in_reasoning and budget_tokens need think_end (else InvalidArgument).
struct ReasoningOptions {
  std::string think_start, think_end;     // the model's markers as text ("<think>", "</think>")
  bool starts_in_reasoning = false;       // the prompt left a think block open (DeepSeek-R1)
  // Reasoning tokens allowed (>= 0). When reasoning_tokens reaches it inside an open
  // block, the engine appends the ids of think_end (encoded, no BOS, specials
  // parsed) itself and the model goes on to its answer. They count as output and
  // reasoning tokens; when they do not fit in max_tokens the request ends with
  // Length instead. 0 with starts_in_reasoning closes the block before the first
  // sample; with a model-written think_start, right after it. nullopt: no limit.
  std::optional<int32_t> budget_tokens;
};

// One generation request as the engine sees it: token ids in, limits and sampling.
// The number of logprobs to report is sampling.num_logprobs.
struct EngineRequest {
  std::vector<int32_t> prompt_token_ids;
  SamplingParams sampling;  // sampling.seed seeds this request's own Sampler
  StoppingCriteria stopping;
  ReasoningOptions reasoning;
  int32_t priority = 0;     // higher runs first
  std::optional<Clock::time_point> deadline;  // when reached: DeadlineExceeded
};

// InvalidArgument naming the first bad field, or Ok. `max_num_tokens` bounds
// prompt + max_tokens (the KV cache per sequence and the model context).
Status validate(const EngineRequest& request, int32_t vocab_size, int32_t max_num_tokens);

// One sampled token's logprob and, when asked for, the best alternatives.
struct TokenLogprobs {
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;
};

// New output since the last event. Text may lag the token ids: bytes of an
// unfinished UTF-8 character, a possible start of a stop string (content) and a
// possible start of a marker are held back.
// Channels: a delta holds one channel's text and the ids of tokens of that channel.
// A token is reasoning when generated inside the block or when it opens or closes
// it (marker ids are reported, their text never); so a delta may carry ids and no
// text. Deltas of one request go Reasoning first, then Content, never back. When
// one token's text crosses think_end, two deltas follow each other: the reasoning
// one with the token's id, then the content one with no ids. While the start of
// the output is still undecided (whitespace, part of think_start) its ids wait and
// go out with the first delta that decides it. Ids the budget forced come in a
// reasoning delta of their own, with logprob 0 and no alternatives.
struct StreamDelta {
  Channel channel = Channel::Content;  // of `text` and `token_ids`
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprobs> logprobs;  // one per token id when sampling.num_logprobs > 0
};

enum class FinishReason { Stop, Length, Cancelled, Deadline, Error };

const char* to_string(FinishReason reason);

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;     // every output token, a stopping one and forced ones included
  // Of completion_tokens, those inside the think block, its markers (and whitespace
  // before a model-written think_start) and forced think_end ids included.
  int32_t reasoning_tokens = 0;
  int32_t cached_prompt_tokens = 0;  // prompt tokens found in the prefix cache at admission
};

struct Timings {
  Clock::duration queued{};               // submit to first scheduled
  std::optional<Clock::duration> time_to_first_token;  // submit to first token; absent when none
  Clock::duration total{};                // submit to the final event
};

// The last event of every accepted request: status is Ok for Stop and Length,
// and names the reason otherwise (Cancelled, DeadlineExceeded, Unavailable, Internal).
struct StreamFinal {
  FinishReason reason = FinishReason::Stop;
  Status status;
  std::optional<std::string> matched_stop;  // the stop string that ended it, if one did
  Usage usage;
  Timings timings;
};

using StreamEvent = std::variant<StreamDelta, StreamFinal>;

// Engine thread → one consumer. Thread-safe; deltas then exactly one final event
// (pushes after it are ignored). Bounded: once `max_pending` deltas wait unread, a
// new delta is merged into the last one when their channels match (text, ids and
// logprobs appended), so a slow reader holds at most max_pending + 2 events whose
// total size is that of the request's output, never more (the engine changes a
// request's channel at most once; each change may add one delta past the bound).
class RequestStream {
 public:
  explicit RequestStream(uint64_t id, size_t max_pending = 64) : id_(id), max_pending_(max_pending) {}
  uint64_t id() const { return id_; }  // what Engine::cancel takes

  void push(StreamEvent event);
  // The next event, or nullopt when none arrives within `timeout`.
  std::optional<StreamEvent> pop(Clock::duration timeout);
  // The next event if one is waiting.
  std::optional<StreamEvent> try_pop();
  // Called after every push that queued or merged an event, on the pushing thread
  // and without the stream's lock held; it must not block. Replaces any earlier one.
  void set_listener(std::function<void()> listener);
  size_t num_pending() const;
  // Whether the final event has been pushed (it may not have been popped yet).
  bool finished() const;

 private:
  const uint64_t id_;
  const size_t max_pending_;
  mutable std::mutex mu_;
  std::shared_ptr<std::function<void()>> listener_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;
  bool finished_ = false;
};

}  // namespace flint
