// flintd's request preparation: every documented range is enforced with a message
// naming the field, defaults are filled in, reasoning is resolved from the
// template; and flintd's flags. On the real SmolLM2 tokenizer.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "model/gguf.h"
#include "server/flintd_options.h"
#include "server/inference_service.h"
#include "server/request_prep.h"

namespace flint::server {
namespace {

namespace fs = std::filesystem;

class RequestPrep : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const fs::path path = fs::path(FLINT_MODELS_DIR) / "SmolLM2-135M-Instruct.Q4_1.gguf";
    tokenizer_ = new Tokenizer(Tokenizer::from_gguf(GgufFile(path.string())));
  }
  static void TearDownTestSuite() { delete tokenizer_; }

  ServedModel served(const ChatTemplate& t, int32_t max_sequence_tokens = 256) const {
    return {.tokenizer = tokenizer_, .chat_template = &t, .vocab_size = 49152, .max_sequence_tokens = max_sequence_tokens};
  }
  static v1::GenerateRequest text_request(const std::string& text) {
    v1::GenerateRequest r;
    r.set_text(text);
    return r;
  }
  static v1::ChatRequest chat_request(const std::string& content) {
    v1::ChatRequest r;
    auto* m = r.add_messages();
    m->set_role("user");
    m->set_content(content);
    return r;
  }

  static Tokenizer* tokenizer_;
  ChatTemplate chatml_ = ChatTemplate::by_name("chatml");
};
Tokenizer* RequestPrep::tokenizer_ = nullptr;

TEST_F(RequestPrep, AnUnsetMaxTokensGetsTheRestOfTheSequenceAndSamplingGetsTheDocumentedDefaults) {
  PreparedRequest p;
  ASSERT_TRUE(prepare_generate(text_request("Hello world"), served(chatml_, 100), p).ok());
  EXPECT_EQ(p.request.prompt_token_ids, tokenizer_->encode("Hello world"));
  EXPECT_EQ(p.request.stopping.max_tokens, 100 - int32_t(p.request.prompt_token_ids.size()));
  EXPECT_EQ(p.request.sampling.temperature, 1.0f);
  EXPECT_EQ(p.request.sampling.top_p, 1.0f);
  EXPECT_EQ(p.request.sampling.top_k, 0);
  EXPECT_FALSE(p.want_logprobs);
  EXPECT_EQ(p.request.sampling.num_logprobs, 0);
  EXPECT_EQ(p.request.priority, 0);
  EXPECT_TRUE(p.request.reasoning.think_start.empty());  // SmolLM2 does not think
}

TEST_F(RequestPrep, APromptOverMaxPromptTokensIsInvalidArgumentEvenWhenTheSequenceHasRoom) {
  const std::string text = "one two three four five six seven eight nine ten";
  const int32_t n = int32_t(tokenizer_->encode(text).size());
  ServedModel model = served(chatml_, 1000);
  model.max_prompt_tokens = n;
  PreparedRequest p;
  EXPECT_TRUE(prepare_generate(text_request(text), model, p).ok());  // exactly at the limit
  model.max_prompt_tokens = n - 1;
  const Status s = prepare_generate(text_request(text), model, p);
  EXPECT_EQ(s.code, StatusCode::InvalidArgument);
  EXPECT_EQ(s.message, "the prompt has " + std::to_string(n) + " tokens; this server accepts prompts of at most " +
                           std::to_string(n - 1) + " tokens");
}

TEST_F(RequestPrep, AGivenSeedIsKeptAndAnUnsetOneIsDrawnAndReported) {
  v1::GenerateRequest r = text_request("Hi");
  r.mutable_sampling()->set_seed(1234);
  PreparedRequest a, b, c;
  ASSERT_TRUE(prepare_generate(r, served(chatml_), a).ok());
  EXPECT_EQ(a.seed, 1234u);
  EXPECT_EQ(a.request.sampling.seed, 1234u);
  ASSERT_TRUE(prepare_generate(text_request("Hi"), served(chatml_), b).ok());
  ASSERT_TRUE(prepare_generate(text_request("Hi"), served(chatml_), c).ok());
  EXPECT_NE(b.seed, c.seed);
  EXPECT_EQ(b.request.sampling.seed, b.seed);
}

TEST_F(RequestPrep, EachOutOfRangeFieldIsInvalidArgumentNamingTheField) {
  struct Case {
    std::function<void(v1::GenerateRequest&)> edit;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](auto& r) { r.mutable_sampling()->set_temperature(-1); }, "sampling.temperature is -1"},
      {[](auto& r) { r.mutable_sampling()->set_temperature(NAN); }, "sampling.temperature"},
      {[](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }, "sampling.top_p is 1.5; it must be in (0, 1]"},
      {[](auto& r) { r.mutable_sampling()->set_top_p(0); }, "sampling.top_p is 0"},
      {[](auto& r) { r.mutable_sampling()->set_top_k(-3); }, "sampling.top_k is -3"},
      {[](auto& r) { r.mutable_sampling()->set_min_p(2); }, "sampling.min_p is 2"},
      {[](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); }, "sampling.repetition_penalty is 0"},
      {[](auto& r) { r.mutable_sampling()->set_presence_penalty(3); }, "sampling.presence_penalty is 3"},
      {[](auto& r) { r.mutable_sampling()->set_frequency_penalty(-2.5f); }, "sampling.frequency_penalty is -2.5"},
      {[](auto& r) { r.mutable_stopping()->set_max_tokens(-1); }, "stopping.max_tokens is -1; it must be at least 1"},
      {[](auto& r) { r.mutable_stopping()->set_max_tokens(0); }, "stopping.max_tokens is 0"},
      {[](auto& r) { r.mutable_stopping()->add_stop(""); }, "stopping.stop[0] is 0 bytes"},
      {[](auto& r) { for (int i = 0; i < 17; ++i) r.mutable_stopping()->add_stop("x"); }, "stopping.stop has 17 strings"},
      {[](auto& r) { r.mutable_stopping()->add_stop_token_ids(49152); }, "stopping.stop_token_ids[0] is 49152"},
      {[](auto& r) { r.mutable_reasoning()->set_budget_tokens(-1); }, "reasoning.budget_tokens is -1"},
      {[](auto& r) { r.mutable_logprobs()->set_top_logprobs(21); }, "logprobs.top_logprobs is 21"},
      {[](auto& r) { r.set_priority(1001); }, "priority is 1001"},
      {[](auto& r) { r.set_request_id(std::string(129, 'a')); }, "request_id is 129 bytes"},
      {[](auto& r) { r.clear_text(); }, "no prompt: set text or token_ids"},
      {[](auto& r) { r.set_text(""); }, "text is empty"},
      {[](auto& r) { r.mutable_token_ids(); }, "token_ids.ids is empty"},
      {[](auto& r) { r.mutable_token_ids()->add_ids(-5); }, "token_ids.ids[0] is -5, outside the vocabulary [0, 49152)"},
      {[](auto& r) {
         std::string words;
         for (int i = 0; i < 300; ++i) words += " w" + std::to_string(i);
         r.set_text(words);
       },
       "tokens; a sequence (prompt plus output) may hold at most 256 tokens"},
      {[](auto& r) { r.mutable_stopping()->set_max_tokens(255); }, "plus stopping.max_tokens 255 exceed the 256 tokens"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest r = text_request("Hello world");
    c.edit(r);
    PreparedRequest p;
    const Status s = prepare_generate(r, served(chatml_), p);
    EXPECT_EQ(s.code, StatusCode::InvalidArgument) << c.expected;
    EXPECT_NE(s.message.find(c.expected), std::string::npos) << "got: " << s.message;
  }
}

TEST_F(RequestPrep, AChatNeedsMessagesWithKnownRoles) {
  PreparedRequest p;
  Status s = prepare_chat(v1::ChatRequest(), served(chatml_), p);
  EXPECT_EQ(s.code, StatusCode::InvalidArgument);
  EXPECT_NE(s.message.find("messages is empty"), std::string::npos) << s.message;

  v1::ChatRequest r = chat_request("hi");
  r.add_messages()->set_role("tool");
  s = prepare_chat(r, served(chatml_), p);
  EXPECT_EQ(s.code, StatusCode::InvalidArgument);
  EXPECT_NE(s.message.find("messages[1].role is \"tool\"; it must be system, user or assistant"), std::string::npos)
      << s.message;
}

TEST_F(RequestPrep, AChatPromptIsTheRenderedTemplateWithoutAnExtraBos) {
  PreparedRequest p;
  ASSERT_TRUE(prepare_chat(chat_request("What is 2+2?"), served(chatml_, 8192), p).ok());
  const std::vector<ChatMessage> messages = {{"user", "What is 2+2?"}};
  EXPECT_EQ(p.request.prompt_token_ids, tokenizer_->encode(chatml_.render(messages), true, /*add_bos=*/false));
}

TEST_F(RequestPrep, LogprobsWithoutAlternativesStillReportTheChosenTokenAndTrimTheRest) {
  v1::GenerateRequest r = text_request("Hi");
  r.mutable_logprobs()->set_top_logprobs(0);
  PreparedRequest p;
  ASSERT_TRUE(prepare_generate(r, served(chatml_), p).ok());
  EXPECT_TRUE(p.want_logprobs);
  EXPECT_GE(p.request.sampling.num_logprobs, 1);  // the engine reports the chosen one with the alternatives

  StreamDelta delta;
  delta.text = "ok";
  delta.token_ids = {42};
  delta.logprobs.push_back({42, -0.5f, {{42, -0.5f}, {7, -1.5f}}});
  v1::Delta out;
  to_proto(delta, p, *tokenizer_, out);
  ASSERT_EQ(out.logprobs_size(), 1);
  EXPECT_EQ(out.logprobs(0).chosen().token_id(), 42);
  EXPECT_EQ(out.logprobs(0).chosen().token(), tokenizer_->token_bytes(42));
  EXPECT_EQ(out.logprobs(0).top_size(), 0);
}

TEST_F(RequestPrep, ReasoningFollowsTheTemplateAndTurningItOffWhereThePromptOpensThinkingMeansBudgetZero) {
  const ChatTemplate r1 = ChatTemplate::by_name("deepseek-r1");
  PreparedRequest p;
  ASSERT_TRUE(prepare_chat(chat_request("hi"), served(r1, 8192), p).ok());
  EXPECT_EQ(p.request.reasoning.think_start, "<think>");
  EXPECT_EQ(p.request.reasoning.think_end, "</think>");
  EXPECT_TRUE(p.request.reasoning.starts_in_reasoning);
  EXPECT_FALSE(p.request.reasoning.budget_tokens);

  v1::ChatRequest off = chat_request("hi");
  off.mutable_reasoning()->set_enabled(false);
  ASSERT_TRUE(prepare_chat(off, served(r1, 8192), p).ok());
  EXPECT_EQ(p.request.reasoning.budget_tokens, 0);

  const ChatTemplate qwen3 = ChatTemplate::by_name("qwen3");
  v1::ChatRequest budget = chat_request("hi");
  budget.mutable_reasoning()->set_budget_tokens(32);
  ASSERT_TRUE(prepare_chat(budget, served(qwen3, 8192), p).ok());
  EXPECT_FALSE(p.request.reasoning.starts_in_reasoning);  // Qwen3 writes <think> itself
  EXPECT_EQ(p.request.reasoning.budget_tokens, 32);

  ASSERT_TRUE(prepare_generate(text_request("<|im_start|>assistant\n<think>\n"), served(qwen3, 8192), p).ok());
  EXPECT_TRUE(p.request.reasoning.starts_in_reasoning);
}

TEST(ToValidUtf8, InvalidAndTruncatedSequencesBecomeReplacementCharacters) {
  EXPECT_EQ(to_valid_utf8("abc"), "abc");
  EXPECT_EQ(to_valid_utf8("h\xC3\xA9"), "h\xC3\xA9");
  EXPECT_EQ(to_valid_utf8("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(to_valid_utf8("x\xE2\x82"), "x\xEF\xBF\xBD");            // one cut-short character
  EXPECT_EQ(to_valid_utf8("\xE2\x82" "a\xC3"), "\xEF\xBF\xBD" "a\xEF\xBF\xBD");
  EXPECT_EQ(to_valid_utf8("\xC0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // an overlong: two bad bytes
}

TEST(EngineStatus, EachEngineCodeMapsToItsGrpcCode) {
  EXPECT_EQ(to_grpc(StatusCode::InvalidArgument), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(to_grpc(StatusCode::ResourceExhausted), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(to_grpc(StatusCode::DeadlineExceeded), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(to_grpc(StatusCode::Cancelled), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(to_grpc(StatusCode::Unavailable), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(to_grpc(StatusCode::Internal), grpc::StatusCode::INTERNAL);
}

TEST(FlintdOptions, DefaultsAreTheDocumentedOnesAndFlagsOverrideThem) {
  FlintdOptions o;
  bool help = false;
  ASSERT_FALSE(parse_flintd_args({}, o, help));
  EXPECT_EQ(o.host, "127.0.0.1");
  EXPECT_EQ(o.port, 50051);
  EXPECT_EQ(o.device, "auto");
  EXPECT_NE(flintd_usage().find("(default 50051)"), std::string::npos);
  ASSERT_FALSE(parse_flintd_args({"--port", "0", "--kv-cache-memory=64MiB", "--device", "cpu", "--max-queue", "3",
                                  "--drain-timeout", "2.5", "--block-size", "32"},
                                 o, help));
  EXPECT_EQ(o.port, 0);
  EXPECT_EQ(o.kv_cache_memory, 64u << 20);
  EXPECT_EQ(o.device, "cpu");
  EXPECT_EQ(o.max_queue, 3);
  EXPECT_EQ(o.drain_timeout_s, 2.5);
  EXPECT_EQ(o.block_size, 32);
  ASSERT_FALSE(parse_flintd_args({"--help"}, o, help));
  EXPECT_TRUE(help);
}

TEST(FlintdOptions, ABadFlagOrValueIsAnErrorThatNamesIt) {
  FlintdOptions o;
  bool help = false;
  EXPECT_EQ(parse_flintd_args({"--port", "70000"}, o, help), "--port must be an integer in [0, 65535], not \"70000\"");
  EXPECT_EQ(parse_flintd_args({"--device", "tpu"}, o, help), "--device must be auto, cpu or cuda");
  EXPECT_EQ(parse_flintd_args({"--kv-cache-memory", "lots"}, o, help), "--kv-cache-memory must be a size such as 512MiB or 2GiB");
  EXPECT_EQ(parse_flintd_args({"--frobnicate"}, o, help), "unknown option --frobnicate");
  EXPECT_EQ(parse_flintd_args({"--max-running-seqs"}, o, help), "--max-running-seqs needs a value");
}

TEST(FlintdOptions, RandomWeightsNeedATokenizerAndATokenizerNeedsRandomWeights) {
  FlintdOptions o;
  bool help = false;
  const auto error = parse_flintd_args({"--random-weights", "llama-3.2-1b:layers=2"}, o, help);
  ASSERT_TRUE(error);
  EXPECT_NE(error->find("--random-weights needs --tokenizer PATH"), std::string::npos) << *error;
  FlintdOptions t;
  EXPECT_EQ(parse_flintd_args({"--tokenizer", "models/x.gguf"}, t, help), "--tokenizer is only for --random-weights");
  FlintdOptions ok;
  ASSERT_FALSE(parse_flintd_args({"--random-weights=qwen3-0.6b", "--tokenizer", "tok"}, ok, help));
  EXPECT_EQ(ok.random_weights, "qwen3-0.6b");
  EXPECT_EQ(ok.tokenizer, "tok");
  EXPECT_NE(describe(ok).find("random weights qwen3-0.6b, tokenizer tok"), std::string::npos) << describe(ok);
  EXPECT_NE(flintd_usage().find("--random-weights SPEC"), std::string::npos);
}

TEST(FlintdOptions, HttpServesOnPort8000WithoutAKeyUntilFlagsSayOtherwise) {
  FlintdOptions o;
  bool help = false;
  ASSERT_FALSE(parse_flintd_args({}, o, help));
  EXPECT_EQ(o.http_port, 8000);
  EXPECT_EQ(o.http_threads, 64);
  EXPECT_EQ(o.api_key, "");
  EXPECT_NE(flintd_usage().find("--http-port N"), std::string::npos);
  EXPECT_NE(describe(o).find("http:               127.0.0.1:8000, 64 threads\n"), std::string::npos);
  EXPECT_NE(describe(o).find("api keys:           none"), std::string::npos);
  EXPECT_NE(describe(o).find("tls:                off"), std::string::npos);
  ASSERT_FALSE(parse_flintd_args({"--http-port", "-1", "--http-threads=8", "--api-key", "sk-test"}, o, help));
  EXPECT_EQ(o.http_port, -1);
  EXPECT_EQ(o.http_threads, 8);
  EXPECT_EQ(o.api_key, "sk-test");
  EXPECT_NE(describe(o).find("http:               off"), std::string::npos);
  EXPECT_EQ(describe(o).find("sk-test"), std::string::npos);  // the key is never printed
  EXPECT_EQ(parse_flintd_args({"--http-port", "-2"}, o, help), "--http-port must be an integer in [-1, 65535], not \"-2\"");
  EXPECT_EQ(parse_flintd_args({"--api-key", ""}, o, help), "--api-key needs a key");
}

TEST(FlintdOptions, SecurityAndLimitFlags) {
  FlintdOptions o;
  bool help = false;
  EXPECT_EQ(o.max_request_bytes, 16ull << 20);
  EXPECT_EQ(o.max_requests_per_key, 0);
  ASSERT_FALSE(parse_flintd_args({"--tls-cert", "c.pem", "--tls-key=k.pem", "--tls-client-ca", "ca.pem",
                                  "--api-key-file", "keys", "--max-requests-per-key", "3",
                                  "--max-request-bytes", "64KiB", "--max-prompt-tokens", "100"},
                                 o, help));
  EXPECT_EQ(o.tls_cert, "c.pem");
  EXPECT_EQ(o.tls_key, "k.pem");
  EXPECT_EQ(o.tls_client_ca, "ca.pem");
  EXPECT_EQ(o.api_key_file, "keys");
  EXPECT_EQ(o.max_requests_per_key, 3);
  EXPECT_EQ(o.max_request_bytes, 64u << 10);
  EXPECT_EQ(o.max_prompt_tokens, 100);
  const std::string text = describe(o);
  EXPECT_NE(text.find("tls:                c.pem, client certificates from ca.pem"), std::string::npos) << text;
  EXPECT_NE(text.find("api keys:           keys, 3 open requests per key"), std::string::npos) << text;
  EXPECT_NE(text.find("max request bytes:  64KiB"), std::string::npos) << text;
  EXPECT_EQ(parse_flintd_args({"--max-request-bytes", "12"}, o, help), "--max-request-bytes must be a size from 1KiB to 1GiB");
  EXPECT_EQ(parse_flintd_args({"--tls-cert"}, o, help), "--tls-cert needs a path");
  EXPECT_EQ(parse_flintd_args({"--max-requests-per-key", "-1"}, o, help),
            "--max-requests-per-key must be an integer in [0, 1048576], not \"-1\"");
}

TEST(FlintdOptions, SizesReadBinaryAndDecimalUnits) {
  EXPECT_EQ(parse_size("1GiB"), 1ull << 30);
  EXPECT_EQ(parse_size("512M"), 512ull << 20);
  EXPECT_EQ(parse_size("1.5G"), 3ull << 29);
  EXPECT_EQ(parse_size("2GB"), 2000000000ull);
  EXPECT_EQ(parse_size("4096"), 4096ull);
  EXPECT_FALSE(parse_size("MiB"));
  EXPECT_FALSE(parse_size("3 parsecs"));
  // The number ends where strtod stops reading it, before "GiB": refused (under
  // ASan this read once went past the end of a destroyed temporary).
  EXPECT_FALSE(parse_size("1.2.3GiB"));
}

}  // namespace
}  // namespace flint::server
