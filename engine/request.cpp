// Request validation, the status and finish-reason names, and RequestStream.
#include "engine/request.h"

#include "common/error.h"
#include "model/utf8.h"

namespace flint {

const char* to_string(StatusCode code) {
  switch (code) {
    case StatusCode::Ok: return "ok";
    case StatusCode::InvalidArgument: return "invalid argument";
    case StatusCode::ResourceExhausted: return "resource exhausted";
    case StatusCode::DeadlineExceeded: return "deadline exceeded";
    case StatusCode::Cancelled: return "cancelled";
    case StatusCode::Unavailable: return "unavailable";
    case StatusCode::Internal: return "internal";
  }
  return "?";
}

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Deadline: return "deadline";
    case FinishReason::Error: return "error";
  }
  return "?";
}

Status validate(const EngineRequest& request, int32_t vocab_size, int32_t max_num_tokens) {
  auto invalid = [](std::string message) { return Status{StatusCode::InvalidArgument, std::move(message)}; };
  const auto& prompt = request.prompt_token_ids;
  const auto& stopping = request.stopping;
  if (prompt.empty()) return invalid("empty prompt");
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] < 0 || prompt[i] >= vocab_size)
      return invalid("prompt token " + std::to_string(i) + " has id " + std::to_string(prompt[i]) +
                     " outside the vocabulary (" + std::to_string(vocab_size) + ")");
  if (stopping.max_tokens < 1) return invalid("max_tokens " + std::to_string(stopping.max_tokens) + " must be >= 1");
  if (int64_t(prompt.size()) + stopping.max_tokens > max_num_tokens)
    return invalid("prompt of " + std::to_string(prompt.size()) + " tokens plus max_tokens " +
                   std::to_string(stopping.max_tokens) + " exceeds the per-sequence capacity of " +
                   std::to_string(max_num_tokens) + " tokens");
  for (const std::string& s : stopping.stop)
    if (s.empty()) return invalid("empty stop string");
  for (int32_t id : stopping.stop_token_ids)
    if (id < 0 || id >= vocab_size) return invalid("stop token id " + std::to_string(id) + " outside the vocabulary");
  const ReasoningOptions& reasoning = request.reasoning;
  if (reasoning.think_end.empty() && (!reasoning.think_start.empty() || reasoning.starts_in_reasoning ||
                                      reasoning.budget_tokens))
    return invalid("reasoning.think_end is empty but think_start, starts_in_reasoning or budget_tokens is set");
  if (reasoning.budget_tokens && *reasoning.budget_tokens < 0)
    return invalid("reasoning budget_tokens " + std::to_string(*reasoning.budget_tokens) + " must be >= 0");
  for (const std::string* marker : {&reasoning.think_start, &reasoning.think_end})
    if (utf8::first_invalid(*marker)) return invalid("reasoning marker is not valid UTF-8");
  try {
    request.sampling.validate();
  } catch (const Error& e) {
    return invalid(e.what());
  }
  return {};
}

const char* to_string(Channel channel) {
  return channel == Channel::Reasoning ? "reasoning" : "content";
}

namespace {

void merge_into(StreamDelta& into, StreamDelta&& from) {
  into.text += from.text;
  into.token_ids.insert(into.token_ids.end(), from.token_ids.begin(), from.token_ids.end());
  for (TokenLogprobs& l : from.logprobs) into.logprobs.push_back(std::move(l));
}

}  // namespace

void RequestStream::push(StreamEvent event) {
  std::shared_ptr<std::function<void()>> listener;
  {
    std::lock_guard lock(mu_);
    if (finished_) return;
    finished_ = std::holds_alternative<StreamFinal>(event);
    StreamDelta* last = events_.empty() ? nullptr : std::get_if<StreamDelta>(&events_.back());
    StreamDelta* next = std::get_if<StreamDelta>(&event);
    if (next && last && events_.size() >= max_pending_ && last->channel == next->channel)
      merge_into(*last, std::move(*next));
    else
      events_.push_back(std::move(event));
    listener = listener_;
  }
  cv_.notify_all();
  if (listener && *listener) (*listener)();
}

std::optional<StreamEvent> RequestStream::try_pop() {
  std::lock_guard lock(mu_);
  if (events_.empty()) return std::nullopt;
  StreamEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

void RequestStream::set_listener(std::function<void()> listener) {
  std::lock_guard lock(mu_);
  listener_ = std::make_shared<std::function<void()>>(std::move(listener));
}

size_t RequestStream::num_pending() const {
  std::lock_guard lock(mu_);
  return events_.size();
}

std::optional<StreamEvent> RequestStream::pop(Clock::duration timeout) {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  StreamEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

bool RequestStream::finished() const {
  std::lock_guard lock(mu_);
  return finished_;
}

}  // namespace flint
