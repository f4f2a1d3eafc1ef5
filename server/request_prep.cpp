// Request preparation: every field checked against the ranges the proto
// documents, defaults filled in, the prompt tokenized, reasoning resolved.
#include "server/request_prep.h"

#include <chrono>
#include <cmath>
#include <random>

#include "common/error.h"
#include "model/utf8.h"

namespace flint::server {

namespace {

constexpr int kMaxStopStrings = 16;
constexpr size_t kMaxStopBytes = 256;
constexpr int kMaxStopTokenIds = 64;
constexpr int kMaxTopLogprobs = 20;
constexpr int32_t kMaxPriority = 1000;
constexpr size_t kMaxRequestIdBytes = 128;

Status invalid(std::string message) { return {StatusCode::InvalidArgument, std::move(message)}; }

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

uint64_t draw_seed() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(mu);
  return rng();
}

Status sampling_params(const v1::SamplingParams& in, SamplingParams& out, uint64_t& seed) {
  out = SamplingParams{};
  if (in.has_temperature()) {
    if (!(in.temperature() >= 0.0f && in.temperature() <= 100.0f))
      return invalid("sampling.temperature is " + num(in.temperature()) + "; it must be in [0, 100] (0 is greedy)");
    out.temperature = in.temperature();
  }
  if (in.has_top_k()) {
    if (in.top_k() < 0) return invalid("sampling.top_k is " + std::to_string(in.top_k()) + "; it must be >= 0 (0 keeps all)");
    out.top_k = in.top_k();
  }
  if (in.has_top_p()) {
    if (!(in.top_p() > 0.0f && in.top_p() <= 1.0f))
      return invalid("sampling.top_p is " + num(in.top_p()) + "; it must be in (0, 1]");
    out.top_p = in.top_p();
  }
  if (in.has_min_p()) {
    if (!(in.min_p() >= 0.0f && in.min_p() <= 1.0f))
      return invalid("sampling.min_p is " + num(in.min_p()) + "; it must be in [0, 1]");
    out.min_p = in.min_p();
  }
  if (in.has_repetition_penalty()) {
    if (!(in.repetition_penalty() > 0.0f && std::isfinite(in.repetition_penalty())))
      return invalid("sampling.repetition_penalty is " + num(in.repetition_penalty()) + "; it must be > 0");
    out.repetition_penalty = in.repetition_penalty();
  }
  if (in.has_presence_penalty()) {
    if (!(in.presence_penalty() >= -2.0f && in.presence_penalty() <= 2.0f))
      return invalid("sampling.presence_penalty is " + num(in.presence_penalty()) + "; it must be in [-2, 2]");
    out.presence_penalty = in.presence_penalty();
  }
  if (in.has_frequency_penalty()) {
    if (!(in.frequency_penalty() >= -2.0f && in.frequency_penalty() <= 2.0f))
      return invalid("sampling.frequency_penalty is " + num(in.frequency_penalty()) + "; it must be in [-2, 2]");
    out.frequency_penalty = in.frequency_penalty();
  }
  seed = in.has_seed() ? in.seed() : draw_seed();
  out.seed = seed;
  return {};
}

// Everything but the prompt and max_tokens' default, which need the prompt's length.
Status common_params(const v1::SamplingParams& sampling, const v1::StoppingCriteria& stopping,
                     const v1::ReasoningParams& reasoning, const v1::LogprobsParams* logprobs, int32_t priority,
                     const std::string& request_id, const ServedModel& model, PreparedRequest& out) {
  if (Status s = sampling_params(sampling, out.request.sampling, out.seed); !s.ok()) return s;
  StoppingCriteria& stop = out.request.stopping;
  if (stopping.has_max_tokens() && stopping.max_tokens() < 1)
    return invalid("stopping.max_tokens is " + std::to_string(stopping.max_tokens()) + "; it must be at least 1");
  if (stopping.stop_size() > kMaxStopStrings)
    return invalid("stopping.stop has " + std::to_string(stopping.stop_size()) + " strings; at most " +
                   std::to_string(kMaxStopStrings) + " are allowed");
  for (int i = 0; i < stopping.stop_size(); ++i) {
    const std::string& s = stopping.stop(i);
    if (s.empty() || s.size() > kMaxStopBytes)
      return invalid("stopping.stop[" + std::to_string(i) + "] is " + std::to_string(s.size()) +
                     " bytes; each stop string must be 1 to " + std::to_string(kMaxStopBytes) + " bytes");
    stop.stop.push_back(s);
  }
  if (stopping.stop_token_ids_size() > kMaxStopTokenIds)
    return invalid("stopping.stop_token_ids has " + std::to_string(stopping.stop_token_ids_size()) + " ids; at most " +
                   std::to_string(kMaxStopTokenIds) + " are allowed");
  for (int i = 0; i < stopping.stop_token_ids_size(); ++i) {
    const int32_t id = stopping.stop_token_ids(i);
    if (id < 0 || id >= model.vocab_size)
      return invalid("stopping.stop_token_ids[" + std::to_string(i) + "] is " + std::to_string(id) +
                     ", outside the vocabulary [0, " + std::to_string(model.vocab_size) + ")");
    stop.stop_token_ids.push_back(id);
  }
  stop.ignore_eos = stopping.ignore_eos();
  if (reasoning.has_budget_tokens() && reasoning.budget_tokens() < 0)
    return invalid("reasoning.budget_tokens is " + std::to_string(reasoning.budget_tokens()) + "; it must be >= 0");
  if (logprobs) {
    if (logprobs->top_logprobs() < 0 || logprobs->top_logprobs() > kMaxTopLogprobs)
      return invalid("logprobs.top_logprobs is " + std::to_string(logprobs->top_logprobs()) + "; it must be in [0, " +
                     std::to_string(kMaxTopLogprobs) + "]");
    out.want_logprobs = true;
    out.num_top_logprobs = logprobs->top_logprobs();
    // The engine reports the chosen token's logprob only alongside alternatives.
    out.request.sampling.num_logprobs = std::max(1, out.num_top_logprobs);
  }
  if (priority < -kMaxPriority || priority > kMaxPriority)
    return invalid("priority is " + std::to_string(priority) + "; it must be in [-1000, 1000]");
  out.request.priority = priority;
  if (request_id.size() > kMaxRequestIdBytes)
    return invalid("request_id is " + std::to_string(request_id.size()) + " bytes; at most 128 are allowed");
  out.request_id = request_id;
  return {};
}

// The prompt's length against the sequence limit, and max_tokens' default.
Status fit_prompt(const v1::StoppingCriteria& stopping, const ServedModel& model, PreparedRequest& out) {
  const int64_t n = int64_t(out.request.prompt_token_ids.size());
  if (model.max_prompt_tokens > 0 && n > model.max_prompt_tokens)
    return invalid("the prompt has " + std::to_string(n) + " tokens; this server accepts prompts of at most " +
                   std::to_string(model.max_prompt_tokens) + " tokens");
  if (n >= model.max_sequence_tokens)
    return invalid("the prompt has " + std::to_string(n) + " tokens; a sequence (prompt plus output) may hold at most " +
                   std::to_string(model.max_sequence_tokens) + " tokens on this server");
  if (stopping.has_max_tokens()) {
    if (n + stopping.max_tokens() > model.max_sequence_tokens)
      return invalid("the prompt's " + std::to_string(n) + " tokens plus stopping.max_tokens " +
                     std::to_string(stopping.max_tokens()) + " exceed the " +
                     std::to_string(model.max_sequence_tokens) + " tokens a sequence may hold on this server");
    out.request.stopping.max_tokens = stopping.max_tokens();
  } else {
    out.request.stopping.max_tokens = int32_t(model.max_sequence_tokens - n);
  }
  return {};
}

// Markers when the model thinks; `opens` says whether the prompt left a think block
// open. A client that turns reasoning off where the prompt cannot: budget 0.
void resolve_reasoning(const v1::ReasoningParams& in, const ServedModel& model, bool opens, ReasoningOptions& out) {
  out = ReasoningOptions{};
  const ChatTemplate& t = *model.chat_template;
  if (t.think_start().empty() || t.think_end().empty()) return;
  out.think_start = t.think_start();
  out.think_end = t.think_end();
  out.starts_in_reasoning = opens;
  if (in.has_budget_tokens()) out.budget_tokens = in.budget_tokens();
  if (in.has_enabled() && !in.enabled()) out.budget_tokens = 0;
}

bool ends_with_marker(std::string_view text, std::string_view marker) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return !marker.empty() && text.ends_with(marker);
}

Status check_utf8(const std::string& s, const std::string& field) {
  if (auto bad = utf8::first_invalid(s))
    return invalid(field + " is not valid UTF-8 (byte " + std::to_string(*bad) + ")");
  return {};
}

}  // namespace

Status chat_messages(const google::protobuf::RepeatedPtrField<v1::ChatMessage>& in, std::vector<ChatMessage>& out) {
  if (in.empty()) return invalid("messages is empty; a chat needs at least one message");
  out.clear();
  for (int i = 0; i < in.size(); ++i) {
    const v1::ChatMessage& m = in[i];
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant")
      return invalid("messages[" + std::to_string(i) + "].role is \"" + to_valid_utf8(m.role()) +
                     "\"; it must be system, user or assistant");
    out.push_back({m.role(), m.content()});
  }
  return {};
}

ChatOptions chat_options(const v1::ChatTemplateOptions& in, bool enable_thinking) {
  ChatOptions options;
  options.enable_thinking = enable_thinking;
  if (!in.date().empty()) {
    options.date_string = in.date();
  } else {
    const auto today = std::chrono::floor<std::chrono::days>(std::chrono::system_clock::now());
    options.date_string = ChatTemplate::date_string(std::chrono::year_month_day(today));
  }
  return options;
}

Status prepare_generate(const v1::GenerateRequest& in, const ServedModel& model, PreparedRequest& out) {
  out = PreparedRequest{};
  if (Status s = common_params(in.sampling(), in.stopping(), in.reasoning(), in.has_logprobs() ? &in.logprobs() : nullptr,
                               in.priority(), in.request_id(), model, out);
      !s.ok())
    return s;
  std::vector<int32_t>& ids = out.request.prompt_token_ids;
  bool opens = false;
  switch (in.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (in.text().empty()) return invalid("text is empty; give a prompt");
      if (Status s = check_utf8(in.text(), "text"); !s.ok()) return s;
      ids = model.tokenizer->encode(in.text(), /*parse_special=*/true,
                                    /*add_bos=*/!in.has_add_special_tokens() || in.add_special_tokens());
      opens = ends_with_marker(in.text(), model.chat_template->think_start());
      break;
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& given = in.token_ids().ids();
      if (given.empty()) return invalid("token_ids.ids is empty; give a prompt");
      for (int i = 0; i < given.size(); ++i)
        if (given[i] < 0 || given[i] >= model.vocab_size)
          return invalid("token_ids.ids[" + std::to_string(i) + "] is " + std::to_string(given[i]) +
                         ", outside the vocabulary [0, " + std::to_string(model.vocab_size) + ")");
      ids.assign(given.begin(), given.end());
      const size_t tail = std::min<size_t>(ids.size(), 8);
      opens = ends_with_marker(model.tokenizer->decode(std::span(ids).last(tail)), model.chat_template->think_start());
      break;
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return invalid("no prompt: set text or token_ids");
  }
  if (ids.empty()) return invalid("the prompt has no tokens");
  resolve_reasoning(in.reasoning(), model, opens, out.request.reasoning);
  return fit_prompt(in.stopping(), model, out);
}

Status prepare_chat(const v1::ChatRequest& in, const ServedModel& model, PreparedRequest& out) {
  out = PreparedRequest{};
  std::vector<ChatMessage> messages;
  if (Status s = chat_messages(in.messages(), messages); !s.ok()) return s;
  if (Status s = common_params(in.sampling(), in.stopping(), in.reasoning(), in.has_logprobs() ? &in.logprobs() : nullptr,
                               in.priority(), in.request_id(), model, out);
      !s.ok())
    return s;
  const bool thinking = !in.reasoning().has_enabled() || in.reasoning().enabled();
  const ChatOptions options = chat_options(in.template_options(), thinking);
  std::string prompt;
  try {
    prompt = model.chat_template->render(messages, options);
  } catch (const Error& e) {
    return invalid(e.what());
  }
  // The template writes BOS itself where the model wants one.
  out.request.prompt_token_ids = model.tokenizer->encode(prompt, /*parse_special=*/true, /*add_bos=*/false);
  if (out.request.prompt_token_ids.empty()) return invalid("the rendered conversation has no tokens");
  resolve_reasoning(in.reasoning(), model, model.chat_template->prompt_opens_think(options), out.request.reasoning);
  return fit_prompt(in.stopping(), model, out);
}

std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      out.push_back(s[i++]);
      continue;
    }
    const size_t n = utf8::valid_char_length(s.substr(i));
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    // One U+FFFD for the longest start of a character that is cut short or broken.
    const auto lead = static_cast<uint8_t>(s[i]);
    const size_t want = utf8::sequence_length(lead);
    size_t k = 1;
    while (want > 1 && k < want && i + k < s.size() && utf8::continuation_ok(lead, k, static_cast<uint8_t>(s[i + k]))) ++k;
    out += "\xEF\xBF\xBD";
    i += k;
  }
  return out;
}

void to_proto(const StreamDelta& in, const PreparedRequest& prepared, const Tokenizer& tokenizer, v1::Delta& out) {
  out.set_text(utf8::first_invalid(in.text) ? to_valid_utf8(in.text) : in.text);
  out.set_channel(in.channel == Channel::Reasoning ? v1::CHANNEL_REASONING : v1::CHANNEL_CONTENT);
  out.mutable_token_ids()->Add(in.token_ids.begin(), in.token_ids.end());
  if (!prepared.want_logprobs) return;
  auto fill = [&](int32_t id, float logprob, v1::TokenLogprob& p) {
    p.set_token_id(id);
    p.set_logprob(logprob);
    p.set_token(tokenizer.token_bytes(id));
  };
  for (const TokenLogprobs& l : in.logprobs) {
    v1::TokenLogprobs& p = *out.add_logprobs();
    fill(l.token_id, l.logprob, *p.mutable_chosen());
    for (size_t k = 0; k < l.top.size() && k < size_t(prepared.num_top_logprobs); ++k)
      fill(l.top[k].token_id, l.top[k].logprob, *p.add_top());
  }
}

void to_proto(const StreamFinal& in, const PreparedRequest& prepared, v1::Finished& out) {
  out.set_reason(in.reason == FinishReason::Length ? v1::FINISH_REASON_LENGTH : v1::FINISH_REASON_STOP);
  if (in.matched_stop) out.set_matched_stop(*in.matched_stop);
  v1::Usage& usage = *out.mutable_usage();
  usage.set_prompt_tokens(in.usage.prompt_tokens);
  usage.set_completion_tokens(in.usage.completion_tokens);
  usage.set_reasoning_tokens(in.usage.reasoning_tokens);
  usage.set_cached_prompt_tokens(in.usage.cached_prompt_tokens);
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  v1::Timings& timings = *out.mutable_timings();
  timings.set_queued_ms(ms(in.timings.queued));
  timings.set_time_to_first_token_ms(in.timings.time_to_first_token ? ms(*in.timings.time_to_first_token) : 0.0);
  timings.set_total_ms(ms(in.timings.total));
  out.set_seed(prepared.seed);
  out.set_request_id(prepared.request_id);
}

std::string describe(const StreamFinal& final) {
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s, %d+%d tokens (%d cached, %d reasoning), ttft %.1f ms, total %.1f ms",
                to_string(final.reason), final.usage.prompt_tokens, final.usage.completion_tokens,
                final.usage.cached_prompt_tokens, final.usage.reasoning_tokens,
                final.timings.time_to_first_token ? ms(*final.timings.time_to_first_token) : 0.0,
                ms(final.timings.total));
  return final.status.ok() ? std::string(buf) : buf + (": " + final.status.message);
}

}  // namespace flint::server
