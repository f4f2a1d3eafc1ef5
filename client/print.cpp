// Text and JSON forms of the API's messages.
#include "client/print.h"

#include <cstdio>
#include <iomanip>

namespace flint::client {

const char* finish_reason_name(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_LENGTH: return "length";
    default: return "unspecified";
  }
}

const char* channel_name(v1::Channel channel) {
  return channel == v1::CHANNEL_REASONING ? "reasoning" : "content";
}

namespace {

Json logprob_json(const v1::TokenLogprob& lp) {
  return {{"token_id", lp.token_id()}, {"logprob", lp.logprob()}, {"token", lp.token()}};
}

}  // namespace

Json delta_json(const v1::Delta& delta) {
  Json d = {{"text", delta.text()},
                      {"channel", channel_name(delta.channel())},
                      {"token_ids", std::vector<int32_t>(delta.token_ids().begin(), delta.token_ids().end())}};
  if (delta.logprobs_size() > 0) {
    Json lps = Json::array();
    for (const v1::TokenLogprobs& tl : delta.logprobs()) {
      Json top = Json::array();
      for (const v1::TokenLogprob& t : tl.top()) top.push_back(logprob_json(t));
      lps.push_back({{"chosen", logprob_json(tl.chosen())}, {"top", top}});
    }
    d["logprobs"] = lps;
  }
  return {{"delta", d}};
}

Json finished_json(const v1::Finished& f) {
  const v1::Usage& u = f.usage();
  const v1::Timings& t = f.timings();
  return {{"finished",
           {{"reason", finish_reason_name(f.reason())},
            {"matched_stop", f.matched_stop()},
            {"usage",
             {{"prompt_tokens", u.prompt_tokens()},
              {"completion_tokens", u.completion_tokens()},
              {"reasoning_tokens", u.reasoning_tokens()},
              {"cached_prompt_tokens", u.cached_prompt_tokens()}}},
            {"timings",
             {{"queued_ms", t.queued_ms()},
              {"time_to_first_token_ms", t.time_to_first_token_ms()},
              {"total_ms", t.total_ms()}}},
            {"seed", f.seed()},
            {"request_id", f.request_id()}}}};
}

Json model_info_json(const v1::ModelInfo& m) {
  return {{"name", m.name()},
          {"architecture", m.architecture()},
          {"vocab_size", m.vocab_size()},
          {"context_length", m.context_length()},
          {"max_sequence_tokens", m.max_sequence_tokens()},
          {"chat_template", m.chat_template()},
          {"think_start", m.think_start()},
          {"think_end", m.think_end()},
          {"eos_token_ids", std::vector<int32_t>(m.eos_token_ids().begin(), m.eos_token_ids().end())},
          {"weight_type", m.weight_type()},
          {"num_parameters", m.num_parameters()},
          {"device", m.device()},
          {"max_running_seqs", m.max_running_seqs()},
          {"max_batched_tokens", m.max_batched_tokens()},
          {"kv_block_size", m.kv_block_size()},
          {"num_kv_blocks", m.num_kv_blocks()},
          {"max_queue", m.max_queue()},
          {"server_version", m.server_version()}};
}

std::string json_line(const Json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

void print_model_info(std::ostream& os, const v1::ModelInfo& m) {
  auto row = [&](const char* name, const auto& value) {
    os << std::left << std::setw(20) << name << value << "\n";
  };
  std::string eos;
  for (int32_t id : m.eos_token_ids()) {
    if (!eos.empty()) eos += ' ';
    eos += std::to_string(id);
  }
  char params[32];
  std::snprintf(params, sizeof params, "%.1fM", double(m.num_parameters()) / 1e6);
  row("model", m.name());
  row("architecture", m.architecture());
  row("parameters", std::string(params) + " (" + std::to_string(m.num_parameters()) + ")");
  row("weight type", m.weight_type());
  row("device", m.device());
  row("vocab size", m.vocab_size());
  row("context length", m.context_length());
  row("max sequence", std::to_string(m.max_sequence_tokens()) + " tokens");
  row("chat template", m.chat_template());
  row("thinking", m.think_start().empty() ? std::string("no") : m.think_start() + " … " + m.think_end());
  row("eos token ids", eos);
  row("max running seqs", m.max_running_seqs());
  row("max batched tokens", m.max_batched_tokens());
  row("kv cache", std::to_string(m.num_kv_blocks()) + " blocks of " + std::to_string(m.kv_block_size()) + " tokens");
  row("max queue", m.max_queue());
  row("server version", m.server_version());
}

void print_stream_summary(std::ostream& os, const StreamOutcome& o) {
  if (!o.finished) return;
  const v1::Finished& f = *o.finished;
  const v1::Usage& u = f.usage();
  os << std::fixed << std::setprecision(1);
  os << "finish: " << finish_reason_name(f.reason());
  if (!f.matched_stop().empty()) os << " (stop \"" << f.matched_stop() << "\")";
  os << "  seed " << f.seed() << "\n";
  os << "tokens: prompt " << u.prompt_tokens() << " (cached " << u.cached_prompt_tokens() << "), completion "
     << u.completion_tokens() << " (reasoning " << u.reasoning_tokens() << ")\n";
  os << "time: ";
  if (auto ttft = o.timeline.ttft_ms()) os << "ttft " << *ttft << " ms";
  else os << "ttft -";
  os << " (server " << f.timings().time_to_first_token_ms() << " ms, queued " << f.timings().queued_ms()
     << " ms), total " << o.total_ms << " ms";
  if (auto rate = o.timeline.decode_tokens_per_s()) os << ", decode " << *rate << " tok/s";
  os << "\n";
  os.unsetf(std::ios::floatfield);
}

}  // namespace flint::client
