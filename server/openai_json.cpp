// OpenAI JSON ⇄ flint.v1: type checks on each field the API reads, then the
// response shapes of chat.completion(.chunk) and text_completion.
#include "server/openai_json.h"

#include <limits>
#include <random>

#include "server/request_prep.h"

namespace flint::server::openai {

namespace {

// Thrown while reading a body; becomes the HttpError parse_* returns.
struct BadRequest {
  HttpError error;
};

[[noreturn]] void bad(std::string message) { throw BadRequest{{400, std::move(message), ""}}; }

// The field, or nullptr when absent or null.
const Json* get(const Json& object, const char* name) {
  auto it = object.find(name);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

std::optional<double> get_number(const Json& object, const char* name) {
  const Json* v = get(object, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad(std::string(name) + " must be a number");
  return v->get<double>();
}

std::optional<int64_t> get_integer(const Json& object, const char* name, int64_t lo, int64_t hi) {
  const Json* v = get(object, name);
  if (!v) return std::nullopt;
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    bad(std::string(name) + " is too large");
  if (!v->is_number_integer()) bad(std::string(name) + " must be an integer");
  const int64_t n = v->get<int64_t>();
  if (n < lo || n > hi)
    bad(std::string(name) + " is " + std::to_string(n) + "; it must be in [" + std::to_string(lo) + ", " +
        std::to_string(hi) + "]");
  return n;
}

std::optional<bool> get_bool(const Json& object, const char* name) {
  const Json* v = get(object, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad(std::string(name) + " must be true or false");
  return v->get<bool>();
}

const Json* get_object(const Json& object, const char* name) {
  const Json* v = get(object, name);
  if (v && !v->is_object()) bad(std::string(name) + " must be an object");
  return v;
}

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// The fields ChatRequest and GenerateRequest share.
template <class Request>
void common_fields(const Json& body, std::string_view served_model, Request& out, ResponseOptions& options) {
  if (const Json* model = get(body, "model")) {
    if (!model->is_string()) bad("model must be a string");
    if (model->get<std::string>() != served_model)
      throw BadRequest{{404, "The model `" + to_valid_utf8(model->get<std::string>()) +
                                 "` does not exist; this server serves `" + std::string(served_model) + "`",
                        "model_not_found"}};
  }
  if (auto n = get_integer(body, "n", 0, kInt32Max); n && *n != 1)
    bad("n is " + std::to_string(*n) + "; this server generates one choice per request (n must be 1)");
  options.stream = get_bool(body, "stream").value_or(false);
  if (const Json* so = get_object(body, "stream_options"))
    options.include_usage = get_bool(*so, "include_usage").value_or(false);

  v1::SamplingParams& s = *out.mutable_sampling();
  if (auto v = get_number(body, "temperature")) s.set_temperature(float(*v));
  if (auto v = get_number(body, "top_p")) s.set_top_p(float(*v));
  if (auto v = get_integer(body, "top_k", -1, kInt32Max)) s.set_top_k(int32_t(std::max<int64_t>(*v, 0)));
  if (auto v = get_number(body, "min_p")) s.set_min_p(float(*v));
  if (auto v = get_number(body, "presence_penalty")) s.set_presence_penalty(float(*v));
  if (auto v = get_number(body, "frequency_penalty")) s.set_frequency_penalty(float(*v));
  if (auto v = get_number(body, "repetition_penalty")) s.set_repetition_penalty(float(*v));
  if (const Json* seed = get(body, "seed")) {
    if (seed->is_number_unsigned()) s.set_seed(seed->get<uint64_t>());
    else if (!seed->is_number_integer() || seed->get<int64_t>() != -1)
      bad("seed must be an integer >= 0 (or -1 for a random one)");
  }

  v1::StoppingCriteria& stop = *out.mutable_stopping();
  auto max_tokens = get_integer(body, "max_completion_tokens", 0, kInt32Max);
  if (!max_tokens) max_tokens = get_integer(body, "max_tokens", 0, kInt32Max);
  if (max_tokens) stop.set_max_tokens(int32_t(*max_tokens));
  if (const Json* v = get(body, "stop")) {
    if (v->is_string()) {
      stop.add_stop(v->get<std::string>());
    } else if (v->is_array()) {
      for (const Json& e : *v) {
        if (!e.is_string()) bad("stop must be a string or an array of strings");
        stop.add_stop(e.get<std::string>());
      }
    } else {
      bad("stop must be a string or an array of strings");
    }
  }
  if (const Json* v = get(body, "stop_token_ids")) {
    if (!v->is_array()) bad("stop_token_ids must be an array of integers");
    for (const Json& e : *v) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > kInt32Max)
        bad("stop_token_ids must be an array of integers >= 0");
      stop.add_stop_token_ids(int32_t(e.get<int64_t>()));
    }
  }
  if (auto v = get_bool(body, "ignore_eos")) stop.set_ignore_eos(*v);
  if (auto v = get_integer(body, "priority", -kInt32Max, kInt32Max)) out.set_priority(int32_t(*v));
  if (const Json* r = get_object(body, "reasoning")) {
    if (auto v = get_bool(*r, "enabled")) out.mutable_reasoning()->set_enabled(*v);
    if (auto v = get_integer(*r, "budget_tokens", -kInt32Max, kInt32Max))
      out.mutable_reasoning()->set_budget_tokens(int32_t(*v));
  }
}

std::string message_content(const Json& content, size_t i) {
  const std::string where = "messages[" + std::to_string(i) + "].content";
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad(where + " must be a string or an array of content parts");
  std::string text;
  for (size_t j = 0; j < content.size(); ++j) {
    const Json& part = content[j];
    const std::string at = where + "[" + std::to_string(j) + "]";
    if (!part.is_object()) bad(at + " must be an object {\"type\": \"text\", \"text\": ...}");
    const Json* type = get(part, "type");
    if (!type || !type->is_string() || type->get<std::string>() != "text")
      bad(at + ".type is " + (type ? to_valid_utf8(type->dump()) : std::string("absent")) +
          "; only \"text\" parts are supported");
    const Json* t = get(part, "text");
    if (!t || !t->is_string()) bad(at + ".text must be a string");
    if (j > 0) text += "\n";
    text += t->get<std::string>();
  }
  return text;
}

// One prompt of token ids, or nullopt when `v` is not an array of integers.
std::optional<std::vector<int32_t>> token_ids(const Json& v) {
  if (!v.is_array() || v.empty()) return std::nullopt;
  std::vector<int32_t> ids;
  for (const Json& e : v) {
    if (!e.is_number_integer()) return std::nullopt;
    const int64_t id = e.get<int64_t>();
    ids.push_back(id < 0 || id > kInt32Max ? -1 : int32_t(id));  // prepare_generate names the bad one
  }
  return ids;
}

std::string fresh_hex(size_t digits) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < digits; ++i) s += kHex[rng() & 15];
  return s;
}

Json choice_base(const ResponseHead& head) {
  return Json{{"id", head.id},
              {"object", head.endpoint == Endpoint::ChatCompletions ? "chat.completion.chunk" : "text_completion"},
              {"created", head.created},
              {"model", head.model}};
}

Json chunk(const ResponseHead& head, Json choice) {
  Json out = choice_base(head);
  out["choices"] = Json::array({std::move(choice)});
  if (head.include_usage) out["usage"] = nullptr;
  return out;
}

}  // namespace

HttpError parse_body(std::string_view body, Json& out) {
  try {
    out = Json::parse(body);
  } catch (const Json::exception& e) {
    return {400, std::string("the request body is not valid JSON: ") + e.what(), ""};
  }
  return {};
}

HttpError parse_chat_request(const Json& body, std::string_view served_model, v1::ChatRequest& out,
                             ResponseOptions& options) {
  out.Clear();
  options = ResponseOptions{};
  try {
    if (!body.is_object()) bad("the request body must be a JSON object");
    common_fields(body, served_model, out, options);
    const Json* messages = get(body, "messages");
    if (!messages || !messages->is_array()) bad("messages must be an array of {role, content}");
    for (size_t i = 0; i < messages->size(); ++i) {
      const Json& m = (*messages)[i];
      if (!m.is_object()) bad("messages[" + std::to_string(i) + "] must be an object {role, content}");
      const Json* role = get(m, "role");
      if (!role || !role->is_string()) bad("messages[" + std::to_string(i) + "].role must be a string");
      v1::ChatMessage& msg = *out.add_messages();
      msg.set_role(role->get<std::string>() == "developer" ? "system" : role->get<std::string>());
      msg.set_content(message_content(m.contains("content") ? m["content"] : Json(), i));
    }
    options.logprobs = get_bool(body, "logprobs").value_or(false);
    if (auto top = get_integer(body, "top_logprobs", 0, kInt32Max)) {
      if (!options.logprobs && *top > 0) bad("top_logprobs needs \"logprobs\": true");
      options.top_logprobs = int32_t(*top);
    }
    if (options.logprobs) out.mutable_logprobs()->set_top_logprobs(options.top_logprobs);
    if (const Json* kwargs = get_object(body, "chat_template_kwargs"))
      if (auto thinking = get_bool(*kwargs, "enable_thinking"); thinking && !out.reasoning().has_enabled())
        out.mutable_reasoning()->set_enabled(*thinking);
  } catch (const BadRequest& e) {
    return e.error;
  }
  return {};
}

HttpError parse_completion_request(const Json& body, std::string_view served_model, v1::GenerateRequest& out,
                                   ResponseOptions& options) {
  out.Clear();
  options = ResponseOptions{};
  try {
    if (!body.is_object()) bad("the request body must be a JSON object");
    common_fields(body, served_model, out, options);
    const Json* prompt = get(body, "prompt");
    if (!prompt) bad("prompt is required: a string or an array of token ids");
    const Json* one = prompt;  // an array of one prompt is that prompt
    if (prompt->is_array() && prompt->size() == 1 && ((*prompt)[0].is_string() || (*prompt)[0].is_array()))
      one = &(*prompt)[0];
    if (one->is_string()) {
      if (one->get<std::string>().empty()) bad("prompt is empty");
      out.set_text(one->get<std::string>());
    } else if (auto ids = token_ids(*one)) {
      out.mutable_token_ids()->mutable_ids()->Add(ids->begin(), ids->end());
    } else if (one->is_array() && one->empty()) {
      bad("prompt is empty");
    } else if (one->is_array() && one->size() > 1 && ((*one)[0].is_string() || (*one)[0].is_array())) {
      bad("prompt holds " + std::to_string(one->size()) + " prompts; this server takes one per request");
    } else {
      bad("prompt must be a string or an array of token ids");
    }
    if (auto v = get_bool(body, "add_special_tokens")) out.set_add_special_tokens(*v);
    if (auto k = get_integer(body, "logprobs", 0, kInt32Max)) {
      options.logprobs = true;
      options.top_logprobs = int32_t(*k);
      out.mutable_logprobs()->set_top_logprobs(options.top_logprobs);
    }
    if (auto best_of = get_integer(body, "best_of", 0, kInt32Max); best_of && *best_of != 1)
      bad("best_of is " + std::to_string(*best_of) + "; this server generates one choice per request");
    if (get_bool(body, "echo").value_or(false)) bad("echo is not supported");
    if (const Json* suffix = get(body, "suffix"); suffix && !(suffix->is_string() && suffix->get<std::string>().empty()))
      bad("suffix is not supported");
  } catch (const BadRequest& e) {
    return e.error;
  }
  return {};
}

HttpError from_status(const Status& status) {
  int code = 500;
  switch (status.code) {
    case StatusCode::Ok: return {};
    case StatusCode::InvalidArgument: code = 400; break;
    case StatusCode::ResourceExhausted: code = 429; break;
    case StatusCode::DeadlineExceeded: code = 504; break;
    case StatusCode::Unavailable: code = 503; break;
    case StatusCode::Cancelled:
    case StatusCode::Internal: code = 500; break;
  }
  // prepare_* names proto fields; say the JSON's names instead.
  static const std::pair<std::string_view, std::string_view> kRenames[] = {
      {"sampling.", ""}, {"stopping.", ""}, {"logprobs.top_logprobs", "top_logprobs"}, {"token_ids.ids", "prompt"}};
  std::string message = status.message;
  for (const auto& [from, to] : kRenames)
    for (size_t at = message.find(from); at != std::string::npos; at = message.find(from, at + to.size()))
      message.replace(at, from.size(), to);
  return {code, std::move(message), ""};
}

Json error_body(const HttpError& error) {
  const char* type = "server_error";
  switch (error.status) {
    case 400: case 405: case 413: type = "invalid_request_error"; break;
    case 401: type = "authentication_error"; break;
    case 404: type = "not_found_error"; break;
    case 429: type = "rate_limit_error"; break;
    case 503: type = "service_unavailable"; break;
    case 504: type = "timeout_error"; break;
  }
  return Json{{"error", Json{{"message", error.message},
                             {"type", type},
                             {"param", nullptr},
                             {"code", error.code.empty() ? Json() : Json(error.code)}}}};
}

std::string new_response_id(Endpoint endpoint) {
  return (endpoint == Endpoint::ChatCompletions ? "chatcmpl-" : "cmpl-") + fresh_hex(24);
}

Json usage_json(const Usage& u) {
  return Json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens},
              {"prompt_tokens_details", Json{{"cached_tokens", u.cached_prompt_tokens}}},
              {"completion_tokens_details", Json{{"reasoning_tokens", u.reasoning_tokens}}}};
}

const char* finish_reason(FinishReason reason) { return reason == FinishReason::Length ? "length" : "stop"; }

Json logprobs_json(Endpoint endpoint, const std::vector<TokenLogprobs>& logprobs, int32_t num_top,
                   const TokenBytes& token_bytes) {
  auto entry = [&](int32_t id, float logprob) {
    const std::string bytes = token_bytes(id);
    return Json{{"token", to_valid_utf8(bytes)},
                {"logprob", logprob},
                {"bytes", std::vector<uint8_t>(bytes.begin(), bytes.end())}};
  };
  auto num = [&](const TokenLogprobs& l) { return std::min(l.top.size(), size_t(std::max(num_top, 0))); };
  if (endpoint == Endpoint::ChatCompletions) {
    Json content = Json::array();
    for (const TokenLogprobs& l : logprobs) {
      Json e = entry(l.token_id, l.logprob);
      e["top_logprobs"] = Json::array();
      for (size_t k = 0; k < num(l); ++k) e["top_logprobs"].push_back(entry(l.top[k].token_id, l.top[k].logprob));
      content.push_back(std::move(e));
    }
    return Json{{"content", std::move(content)}};
  }
  Json tokens = Json::array(), token_logprobs = Json::array(), top = Json::array();
  for (const TokenLogprobs& l : logprobs) {
    tokens.push_back(to_valid_utf8(token_bytes(l.token_id)));
    token_logprobs.push_back(l.logprob);
    Json alternatives = Json::object();
    for (size_t k = 0; k < num(l); ++k) alternatives[to_valid_utf8(token_bytes(l.top[k].token_id))] = l.top[k].logprob;
    top.push_back(std::move(alternatives));
  }
  return Json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}};
}

Json role_chunk(const ResponseHead& head) {
  return chunk(head, Json{{"index", 0},
                          {"delta", Json{{"role", "assistant"}, {"content", ""}}},
                          {"logprobs", nullptr},
                          {"finish_reason", nullptr}});
}

Json delta_chunk(const ResponseHead& head, Channel channel, const std::string& text, Json logprobs) {
  const char* key = channel == Channel::Reasoning ? "reasoning_content" : "content";
  if (head.endpoint == Endpoint::ChatCompletions)
    return chunk(head, Json{{"index", 0},
                            {"delta", Json{{key, text}}},
                            {"logprobs", std::move(logprobs)},
                            {"finish_reason", nullptr}});
  Json choice{{"index", 0}, {"text", channel == Channel::Content ? text : ""}};
  if (channel == Channel::Reasoning) choice["reasoning_content"] = text;
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = nullptr;
  return chunk(head, std::move(choice));
}

Json finish_chunk(const ResponseHead& head, FinishReason reason) {
  if (head.endpoint == Endpoint::ChatCompletions)
    return chunk(head,
                 Json{{"index", 0}, {"delta", Json::object()}, {"logprobs", nullptr}, {"finish_reason", finish_reason(reason)}});
  return chunk(head, Json{{"index", 0}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", finish_reason(reason)}});
}

Json usage_chunk(const ResponseHead& head, const Usage& usage) {
  Json out = choice_base(head);
  out["choices"] = Json::array();
  out["usage"] = usage_json(usage);
  return out;
}

void Answer::add(const StreamDelta& delta) {
  (delta.channel == Channel::Reasoning ? reasoning : content) += delta.text;
  logprobs.insert(logprobs.end(), delta.logprobs.begin(), delta.logprobs.end());
}

Json full_response(const ResponseHead& head, const Answer& answer, const StreamFinal& final,
                   const ResponseOptions& options, const TokenBytes& token_bytes) {
  const bool chat = head.endpoint == Endpoint::ChatCompletions;
  Json out{{"id", head.id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", head.created},
           {"model", head.model}};
  Json choice{{"index", 0}};
  if (chat) {
    Json message{{"role", "assistant"}, {"content", answer.content}};
    if (!answer.reasoning.empty()) message["reasoning_content"] = answer.reasoning;
    choice["message"] = std::move(message);
  } else {
    choice["text"] = answer.content;
    if (!answer.reasoning.empty()) choice["reasoning_content"] = answer.reasoning;
  }
  choice["logprobs"] = options.logprobs ? logprobs_json(head.endpoint, answer.logprobs, options.top_logprobs, token_bytes)
                                        : Json();
  choice["finish_reason"] = finish_reason(final.reason);
  out["choices"] = Json::array({std::move(choice)});
  out["usage"] = usage_json(final.usage);
  return out;
}

Json model_object(const std::string& model, int64_t created, int32_t max_model_len) {
  return Json{{"id", model}, {"object", "model"}, {"created", created}, {"owned_by", "flint"},
              {"max_model_len", max_model_len}};
}

Json models_list(const std::string& model, int64_t created, int32_t max_model_len) {
  return Json{{"object", "list"}, {"data", Json::array({model_object(model, created, max_model_len)})}};
}

std::string dump(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string sse_event(const Json& value) { return "data: " + dump(value) + "\n\n"; }

}  // namespace flint::server::openai
