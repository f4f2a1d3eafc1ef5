// The OpenAI-compatible API's JSON: each request field lands in its flint.v1 field,
// unsupported values are 400 and another model 404; chunks, full answers, usage
// and error bodies have OpenAI's shapes; prepare_* messages say the JSON's names.
#include <gtest/gtest.h>

#include "server/openai_json.h"

namespace flint::server::openai {
namespace {

constexpr const char* kModel = "SmolLM2-135M-Instruct.Q4_1";

HttpError chat(const char* json, v1::ChatRequest& out, ResponseOptions& options) {
  return parse_chat_request(Json::parse(json), kModel, out, options);
}

HttpError completion(const char* json, v1::GenerateRequest& out, ResponseOptions& options) {
  return parse_completion_request(Json::parse(json), kModel, out, options);
}

// Found by fuzz/openai_json_fuzz.cpp: nlohmann throws out_of_range, not parse_error,
// for a number past double's range, and the HTTP server answered 500.
TEST(OpenAiRequest, BodyWithANumberPastDoubleRangeIs400NotAnException) {
  Json body;
  HttpError e = parse_body(R"({"prompt": "a", "max_tokens": 1e400})", body);
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(e.message.find("not valid JSON"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("1e400"), std::string::npos) << e.message;
  e = parse_body(R"({"messages": [{"role": "user", "content": "Hi"}])", body);
  EXPECT_EQ(e.status, 400);
  e = parse_body(R"({"prompt": "a", "max_tokens": 1e300})", body);
  ASSERT_TRUE(e.ok()) << e.message;
  EXPECT_DOUBLE_EQ(body["max_tokens"].get<double>(), 1e300);
}

TEST(OpenAiRequest, EverySamplingStoppingAndExtensionFieldLandsInItsProtoField) {
  v1::ChatRequest r;
  ResponseOptions o;
  const HttpError e = chat(R"({"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "hi"}],
      "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "presence_penalty": 0.25,
      "frequency_penalty": -0.5, "repetition_penalty": 1.1, "seed": 7, "max_tokens": 12, "stop": ["a", "bc"],
      "stop_token_ids": [2, 3], "ignore_eos": true, "n": 1, "priority": 5, "user": "someone",
      "reasoning": {"enabled": false, "budget_tokens": 64}, "stream": true,
      "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 3, "some_future_field": [1]})",
                           r, o);
  ASSERT_TRUE(e.ok()) << e.message;
  EXPECT_FLOAT_EQ(r.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(r.sampling().top_p(), 0.9f);
  EXPECT_EQ(r.sampling().top_k(), 40);
  EXPECT_FLOAT_EQ(r.sampling().min_p(), 0.05f);
  EXPECT_FLOAT_EQ(r.sampling().presence_penalty(), 0.25f);
  EXPECT_FLOAT_EQ(r.sampling().frequency_penalty(), -0.5f);
  EXPECT_FLOAT_EQ(r.sampling().repetition_penalty(), 1.1f);
  EXPECT_EQ(r.sampling().seed(), 7u);
  EXPECT_EQ(r.stopping().max_tokens(), 12);
  ASSERT_EQ(r.stopping().stop_size(), 2);
  EXPECT_EQ(r.stopping().stop(1), "bc");
  EXPECT_EQ(r.stopping().stop_token_ids_size(), 2);
  EXPECT_TRUE(r.stopping().ignore_eos());
  EXPECT_EQ(r.priority(), 5);
  EXPECT_FALSE(r.reasoning().enabled());
  EXPECT_EQ(r.reasoning().budget_tokens(), 64);
  EXPECT_TRUE(o.stream);
  EXPECT_TRUE(o.include_usage);
  EXPECT_TRUE(o.logprobs);
  EXPECT_EQ(o.top_logprobs, 3);
  ASSERT_TRUE(r.has_logprobs());
  EXPECT_EQ(r.logprobs().top_logprobs(), 3);
}

TEST(OpenAiRequest, UnsetFieldsAndNullsLeaveTheProtoDefaultsToPrepare) {
  v1::ChatRequest r;
  ResponseOptions o;
  ASSERT_TRUE(chat(R"({"messages": [{"role": "user", "content": "hi"}], "temperature": null, "stop": null,
                       "seed": -1, "top_k": -1})",
                   r, o)
                  .ok());
  EXPECT_FALSE(r.sampling().has_temperature());
  EXPECT_FALSE(r.sampling().has_seed());  // -1: a random seed
  EXPECT_EQ(r.sampling().top_k(), 0);     // -1: off, as vLLM
  EXPECT_FALSE(r.stopping().has_max_tokens());
  EXPECT_EQ(r.stopping().stop_size(), 0);
  EXPECT_FALSE(r.has_logprobs());
  EXPECT_FALSE(o.stream);
}

TEST(OpenAiRequest, MaxCompletionTokensWinsOverMaxTokens) {
  v1::ChatRequest r;
  ResponseOptions o;
  ASSERT_TRUE(chat(R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "max_completion_tokens": 9})",
                   r, o)
                  .ok());
  EXPECT_EQ(r.stopping().max_tokens(), 9);
}

TEST(OpenAiRequest, StopMayBeOneStringOrAnArrayOfStrings) {
  v1::ChatRequest r;
  ResponseOptions o;
  ASSERT_TRUE(chat(R"({"messages": [{"role": "user", "content": "hi"}], "stop": "\n\n"})", r, o).ok());
  ASSERT_EQ(r.stopping().stop_size(), 1);
  EXPECT_EQ(r.stopping().stop(0), "\n\n");
  EXPECT_EQ(chat(R"({"messages": [{"role": "user", "content": "hi"}], "stop": [1]})", r, o).status, 400);
}

TEST(OpenAiRequest, ContentPartsAreJoinedTextAndOtherPartTypesAre400) {
  v1::ChatRequest r;
  ResponseOptions o;
  ASSERT_TRUE(chat(R"({"messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content":
                       [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
                       {"role": "assistant", "content": null}]})",
                   r, o)
                  .ok());
  ASSERT_EQ(r.messages_size(), 3);
  EXPECT_EQ(r.messages(0).role(), "system");  // developer is OpenAI's newer name for it
  EXPECT_EQ(r.messages(1).content(), "one\ntwo");
  EXPECT_EQ(r.messages(2).content(), "");
  const HttpError e = chat(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})",
                           r, o);
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.message, "messages[0].content[0].type is \"image_url\"; only \"text\" parts are supported");
}

TEST(OpenAiRequest, MoreThanOneChoiceIs400) {
  v1::ChatRequest r;
  ResponseOptions o;
  const HttpError e = chat(R"({"messages": [{"role": "user", "content": "hi"}], "n": 2})", r, o);
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(e.message.find("n must be 1"), std::string::npos);
}

TEST(OpenAiRequest, AnotherModelsNameIs404ModelNotFound) {
  v1::ChatRequest r;
  ResponseOptions o;
  const HttpError e = chat(R"({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})", r, o);
  EXPECT_EQ(e.status, 404);
  EXPECT_EQ(e.code, "model_not_found");
  EXPECT_NE(e.message.find("`gpt-4o` does not exist"), std::string::npos);
}

TEST(OpenAiRequest, AFieldOfTheWrongTypeIs400NamingIt) {
  v1::ChatRequest r;
  ResponseOptions o;
  EXPECT_EQ(chat(R"({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"})", r, o).message,
            "temperature must be a number");
  EXPECT_EQ(chat(R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5})", r, o).message,
            "max_tokens must be an integer");
  EXPECT_EQ(chat(R"({"messages": "hi"})", r, o).message, "messages must be an array of {role, content}");
  EXPECT_EQ(chat(R"([1, 2])", r, o).message, "the request body must be a JSON object");
  EXPECT_EQ(chat(R"({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2})", r, o).status, 400);
}

TEST(OpenAiRequest, EnableThinkingFromChatTemplateKwargsYieldsToReasoningEnabled) {
  v1::ChatRequest r;
  ResponseOptions o;
  ASSERT_TRUE(chat(R"({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"enable_thinking": false}})",
                   r, o)
                  .ok());
  EXPECT_TRUE(r.reasoning().has_enabled());
  EXPECT_FALSE(r.reasoning().enabled());
  ASSERT_TRUE(chat(R"({"messages": [{"role": "user", "content": "hi"}], "reasoning": {"enabled": true},
                       "chat_template_kwargs": {"enable_thinking": false}})",
                   r, o)
                  .ok());
  EXPECT_TRUE(r.reasoning().enabled());
}

TEST(OpenAiRequest, ACompletionPromptIsTextTokenIdsOrAnArrayOfOne) {
  v1::GenerateRequest r;
  ResponseOptions o;
  ASSERT_TRUE(completion(R"({"prompt": "Once", "logprobs": 2, "add_special_tokens": false})", r, o).ok());
  EXPECT_EQ(r.text(), "Once");
  EXPECT_FALSE(r.add_special_tokens());
  EXPECT_TRUE(o.logprobs);
  EXPECT_EQ(r.logprobs().top_logprobs(), 2);
  ASSERT_TRUE(completion(R"({"prompt": [1, 2, 3]})", r, o).ok());
  EXPECT_EQ(r.token_ids().ids_size(), 3);
  ASSERT_TRUE(completion(R"({"prompt": ["Once"]})", r, o).ok());
  EXPECT_EQ(r.text(), "Once");
  ASSERT_TRUE(completion(R"({"prompt": [[4, 5]]})", r, o).ok());
  EXPECT_EQ(r.token_ids().ids_size(), 2);
  EXPECT_EQ(completion(R"({"prompt": ["a", "b"]})", r, o).message,
            "prompt holds 2 prompts; this server takes one per request");
  EXPECT_EQ(completion(R"({"prompt": ""})", r, o).message, "prompt is empty");
  EXPECT_EQ(completion(R"({})", r, o).status, 400);
  EXPECT_EQ(completion(R"({"prompt": "x", "echo": true})", r, o).status, 400);
  EXPECT_EQ(completion(R"({"prompt": "x", "best_of": 3})", r, o).status, 400);
}

TEST(OpenAiStatus, EngineCodesMapToHttpStatusesAndProtoFieldNamesBecomeJsonNames) {
  EXPECT_EQ(from_status({StatusCode::InvalidArgument, ""}).status, 400);
  EXPECT_EQ(from_status({StatusCode::ResourceExhausted, ""}).status, 429);
  EXPECT_EQ(from_status({StatusCode::Unavailable, ""}).status, 503);
  EXPECT_EQ(from_status({StatusCode::Internal, ""}).status, 500);
  EXPECT_TRUE(from_status({}).ok());
  EXPECT_EQ(from_status({StatusCode::InvalidArgument, "sampling.temperature is 200; it must be in [0, 100] (0 is greedy)"})
                .message,
            "temperature is 200; it must be in [0, 100] (0 is greedy)");
  EXPECT_EQ(from_status({StatusCode::InvalidArgument, "the prompt's 9 tokens plus stopping.max_tokens 300 exceed"}).message,
            "the prompt's 9 tokens plus max_tokens 300 exceed");
}

TEST(OpenAiStatus, AnErrorBodyHasOpenAisShapeAndTheTypeOfItsStatus) {
  const Json body = error_body({404, "The model `x` does not exist", "model_not_found"});
  EXPECT_EQ(body["error"]["message"], "The model `x` does not exist");
  EXPECT_EQ(body["error"]["type"], "not_found_error");
  EXPECT_TRUE(body["error"]["param"].is_null());
  EXPECT_EQ(body["error"]["code"], "model_not_found");
  EXPECT_TRUE(error_body({400, "m", ""})["error"]["code"].is_null());
  EXPECT_EQ(error_body({400, "m", ""})["error"]["type"], "invalid_request_error");
  EXPECT_EQ(error_body({401, "m", ""})["error"]["type"], "authentication_error");
  EXPECT_EQ(error_body({429, "m", ""})["error"]["type"], "rate_limit_error");
  EXPECT_EQ(error_body({503, "m", ""})["error"]["type"], "service_unavailable");
  EXPECT_EQ(error_body({500, "m", ""})["error"]["type"], "server_error");
}

const ResponseHead kChat{"chatcmpl-1", 1700000000, kModel, Endpoint::ChatCompletions, false};
const ResponseHead kCompletion{"cmpl-1", 1700000000, kModel, Endpoint::Completions, false};

TEST(OpenAiResponse, ReasoningAndContentDeltasGoInTheirOwnDeltaFields) {
  const Json first = role_chunk(kChat);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  const Json thinking = delta_chunk(kChat, Channel::Reasoning, "hmm", Json());
  EXPECT_EQ(thinking["choices"][0]["delta"], Json({{"reasoning_content", "hmm"}}));
  EXPECT_TRUE(thinking["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(thinking.contains("usage"));
  const Json answer = delta_chunk(kChat, Channel::Content, "Hi", Json());
  EXPECT_EQ(answer["choices"][0]["delta"], Json({{"content", "Hi"}}));
  EXPECT_EQ(answer["id"], "chatcmpl-1");
  EXPECT_EQ(answer["model"], kModel);
  const Json text = delta_chunk(kCompletion, Channel::Content, "Hi", Json());
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "Hi");
}

TEST(OpenAiResponse, TheLastChunksAreTheFinishReasonThenUsageWithNoChoices) {
  ResponseHead head = kChat;
  head.include_usage = true;
  const Json done = finish_chunk(head, FinishReason::Length);
  EXPECT_EQ(done["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(done["choices"][0]["delta"], Json::object());
  EXPECT_TRUE(done["usage"].is_null());  // present and null until the usage chunk
  const Usage usage{.prompt_tokens = 10, .completion_tokens = 7, .reasoning_tokens = 3, .cached_prompt_tokens = 4};
  const Json last = usage_chunk(head, usage);
  EXPECT_TRUE(last["choices"].empty());
  EXPECT_EQ(last["usage"]["total_tokens"], 17);
}

TEST(OpenAiResponse, UsageCountsCachedAndReasoningTokensInTheirDetails) {
  const Usage usage{.prompt_tokens = 10, .completion_tokens = 7, .reasoning_tokens = 3, .cached_prompt_tokens = 4};
  EXPECT_EQ(usage_json(usage), Json::parse(R"({"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
      "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 3}})"));
}

TEST(OpenAiResponse, AFullAnswerHoldsContentReasoningLogprobsAndUsage) {
  Answer answer;
  answer.add({.channel = Channel::Reasoning, .text = "think", .token_ids = {5}, .logprobs = {{5, -0.5f, {}}}});
  answer.add({.channel = Channel::Content, .text = "Hi", .token_ids = {6},
              .logprobs = {{6, -0.25f, {{6, -0.25f}, {7, -2.0f}}}}});
  StreamFinal final;
  final.usage = {.prompt_tokens = 3, .completion_tokens = 2};
  const TokenBytes bytes = [](int32_t id) { return std::string(id == 7 ? "\xE2\x82" : id == 6 ? "t6" : "t5"); };
  const Json chat = full_response(kChat, answer, final, {.logprobs = true, .top_logprobs = 1}, bytes);
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "Hi");
  EXPECT_EQ(chat["choices"][0]["message"]["reasoning_content"], "think");
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "stop");
  const Json& lp = chat["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(lp.size(), 2u);
  EXPECT_EQ(lp[1]["token"], "t6");
  EXPECT_EQ(lp[1]["top_logprobs"].size(), 1u);  // trimmed to top_logprobs
  const Json broken = logprobs_json(Endpoint::ChatCompletions, {{7, -1.0f, {}}}, 0, bytes)["content"][0];
  EXPECT_EQ(broken["token"], "\xEF\xBF\xBD");
  EXPECT_EQ(broken["bytes"], Json({0xE2, 0x82}));  // the token's own bytes, unsigned
  EXPECT_EQ(chat["usage"]["total_tokens"], 5);
  const Json text = full_response(kCompletion, answer, final, {.logprobs = true, .top_logprobs = 2}, bytes);
  EXPECT_EQ(text["choices"][0]["text"], "Hi");
  EXPECT_EQ(text["choices"][0]["logprobs"]["tokens"], Json({"t5", "t6"}));
  EXPECT_EQ(text["choices"][0]["logprobs"]["top_logprobs"][1].size(), 2u);
  EXPECT_TRUE(text["choices"][0]["logprobs"]["top_logprobs"][1].contains("\xEF\xBF\xBD"));  // a broken character
  EXPECT_TRUE(full_response(kChat, answer, final, {}, bytes)["choices"][0]["logprobs"].is_null());
}

TEST(OpenAiResponse, AServerSentEventIsOneDataLineAndABlankLine) {
  EXPECT_EQ(sse_event(Json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(models_list(kModel, 5, 8192)["data"][0]["owned_by"], "flint");
  EXPECT_TRUE(new_response_id(Endpoint::ChatCompletions).starts_with("chatcmpl-"));
  EXPECT_EQ(new_response_id(Endpoint::Completions).size(), 5u + 24u);
}

}  // namespace
}  // namespace flint::server::openai
