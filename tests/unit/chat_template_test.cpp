// ChatTemplate tests: every family renders byte-identically to jinja2 on the models' own
// templates (tests/data/templates/expected.json), detection, names, markers, stop tokens.
#include "model/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"

namespace flint {
namespace {

const std::string kTemplateDir = std::string(FLINT_TEST_DATA_DIR) + "/templates/";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const nlohmann::json& expected() {
  static const nlohmann::json j = nlohmann::json::parse(read_file(kTemplateDir + "expected.json"));
  return j;
}

Arch arch_from(const std::string& name) {
  if (name == "llama") return Arch::Llama;
  if (name == "qwen2") return Arch::Qwen2;
  if (name == "qwen3") return Arch::Qwen3;
  throw std::runtime_error("unknown arch " + name);
}

ChatTemplate detect_fixture(const std::string& model) {
  const nlohmann::json& t = expected()["templates"][model];
  return ChatTemplate::detect(read_file(kTemplateDir + t["file"].get<std::string>()),
                              arch_from(t["arch"].get<std::string>()));
}

std::vector<ChatMessage> conversation(const std::string& name) {
  std::vector<ChatMessage> messages;
  for (const auto& m : expected()["conversations"][name])
    messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return messages;
}

// Renders every recorded case of one model's template and compares byte for byte.
void expect_all_cases_match(const std::string& model) {
  const nlohmann::json& t = expected()["templates"][model];
  ChatTemplate tmpl = detect_fixture(model);
  ASSERT_EQ(tmpl.name(), t["kind"].get<std::string>()) << model;
  ASSERT_FALSE(t["cases"].empty());
  for (const auto& c : t["cases"]) {
    ChatOptions options;
    options.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    if (c.contains("enable_thinking")) options.enable_thinking = c["enable_thinking"].get<bool>();
    if (c.contains("date_string")) options.date_string = c["date_string"].get<std::string>();
    const std::string conv = c["conversation"].get<std::string>();
    EXPECT_EQ(tmpl.render(conversation(conv), options), c["expected"].get<std::string>())
        << model << " / " << conv << " / add_generation_prompt=" << options.add_generation_prompt
        << " enable_thinking=" << options.enable_thinking << " date=" << options.date_string;
  }
}

TEST(ChatTemplate, SmolLM2MatchesJinjaByteForByte) { expect_all_cases_match("smollm2"); }
TEST(ChatTemplate, Qwen25MatchesJinjaByteForByte) { expect_all_cases_match("qwen2.5"); }
TEST(ChatTemplate, Qwen3MatchesJinjaByteForByte) { expect_all_cases_match("qwen3"); }
TEST(ChatTemplate, Llama32MatchesJinjaByteForByte) { expect_all_cases_match("llama3.2"); }
TEST(ChatTemplate, DeepSeekR1DistillMatchesJinjaByteForByte) { expect_all_cases_match("deepseek-r1-distill"); }

TEST(ChatTemplate, FixturesCoverEveryConversationAndOption) {
  size_t num_conversations = expected()["conversations"].size();
  for (const auto& [model, t] : expected()["templates"].items()) {
    std::map<std::string, int> seen;
    bool gen_on = false, gen_off = false, think_off = false;
    for (const auto& c : t["cases"]) {
      ++seen[c["conversation"].get<std::string>()];
      (c["add_generation_prompt"].get<bool>() ? gen_on : gen_off) = true;
      if (c.contains("enable_thinking") && !c["enable_thinking"].get<bool>()) think_off = true;
    }
    EXPECT_EQ(seen.size(), num_conversations) << model;
    EXPECT_TRUE(gen_on && gen_off) << model;
    if (model == "qwen3") {
      EXPECT_TRUE(think_off);
    }
  }
}

TEST(ChatTemplate, DetectReadsTheDefaultSystemPromptFromTheTemplate) {
  ChatTemplate smol = detect_fixture("smollm2");
  EXPECT_EQ(smol.kind(), TemplateKind::ChatML);
  EXPECT_EQ(smol.default_system_prompt(), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  ChatTemplate qwen25 = detect_fixture("qwen2.5");
  EXPECT_EQ(qwen25.kind(), TemplateKind::ChatML);
  EXPECT_EQ(qwen25.default_system_prompt(), "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  EXPECT_EQ(detect_fixture("qwen3").default_system_prompt(), "");
  EXPECT_EQ(ChatTemplate::by_name("chatml").default_system_prompt(), "");
}

TEST(ChatTemplate, DetectChoosesEachFamily) {
  EXPECT_EQ(detect_fixture("qwen3").kind(), TemplateKind::Qwen3);
  EXPECT_EQ(detect_fixture("llama3.2").kind(), TemplateKind::Llama3);
  EXPECT_EQ(detect_fixture("deepseek-r1-distill").kind(), TemplateKind::DeepSeekR1);
  // The same DeepSeek template decides the same way on a Llama-architecture distill.
  std::string r1 = read_file(kTemplateDir + "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja");
  EXPECT_EQ(ChatTemplate::detect(r1, Arch::Llama).kind(), TemplateKind::DeepSeekR1);
}

TEST(ChatTemplate, PlainChatMLWithoutDefaultSystemPromptRendersNone) {
  std::string chatml =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  ChatTemplate t = ChatTemplate::detect(chatml, Arch::Qwen2);
  EXPECT_EQ(t.kind(), TemplateKind::ChatML);
  EXPECT_EQ(t.default_system_prompt(), "");
  std::vector<ChatMessage> m = {{"user", "hi"}};
  EXPECT_EQ(t.render(m), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, OlderDeepSeekTemplateDoesNotOpenThinkBlock) {
  std::string r1 = read_file(kTemplateDir + "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja");
  const std::string newer = "{{'<｜Assistant｜><think>\\n'}}";
  size_t at = r1.find(newer);
  ASSERT_NE(at, std::string::npos);
  r1.replace(at, newer.size(), "{{'<｜Assistant｜>'}}");
  ChatTemplate t = ChatTemplate::detect(r1, Arch::Qwen2);
  std::vector<ChatMessage> m = {{"user", "hi"}};
  EXPECT_EQ(t.render(m), "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>");
  EXPECT_FALSE(t.prompt_opens_think());
}

TEST(ChatTemplate, UnknownTemplateIsAClearError) {
  const std::string gemma =
      "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
      "{{ message['content'] }}<end_of_turn>\n{% endfor %}";
  try {
    ChatTemplate::detect(gemma, Arch::Llama);
    FAIL() << "expected flint::Error";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("not recognised"), std::string::npos) << what;
    EXPECT_NE(what.find("chatml, qwen3, llama3, deepseek-r1"), std::string::npos) << what;
  }
  // ChatML with reasoning markers but no Qwen3 switch (QwQ-style) is not guessed at.
  EXPECT_THROW(ChatTemplate::detect("<|im_start|>assistant\n<think>\n", Arch::Qwen2), Error);
  // No template at all: only the Qwen3 architecture settles the family.
  EXPECT_EQ(ChatTemplate::detect("", Arch::Qwen3).kind(), TemplateKind::Qwen3);
  EXPECT_THROW(ChatTemplate::detect("", Arch::Llama), Error);
  EXPECT_THROW(ChatTemplate::detect("", Arch::Qwen2), Error);
}

TEST(ChatTemplate, ByNameOverridesAndListsNamesWhenUnknown) {
  EXPECT_EQ(ChatTemplate::by_name("chatml").kind(), TemplateKind::ChatML);
  EXPECT_EQ(ChatTemplate::by_name("qwen3").kind(), TemplateKind::Qwen3);
  EXPECT_EQ(ChatTemplate::by_name("llama3").kind(), TemplateKind::Llama3);
  EXPECT_EQ(ChatTemplate::by_name("deepseek-r1").kind(), TemplateKind::DeepSeekR1);
  for (std::string_view n : {"chatml", "qwen3", "llama3", "deepseek-r1"}) EXPECT_EQ(ChatTemplate::by_name(n).name(), n);
  try {
    ChatTemplate::by_name("vicuna");
    FAIL() << "expected flint::Error";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("vicuna"), std::string::npos) << what;
    EXPECT_NE(what.find("chatml, qwen3, llama3, deepseek-r1"), std::string::npos) << what;
  }
  EXPECT_THROW(ChatTemplate::by_name(""), Error);
  EXPECT_THROW(ChatTemplate::by_name("ChatML"), Error);
}

TEST(ChatTemplate, ByNameRendersLikeTheDetectedTemplate) {
  // by_name has no template source, so ChatML gets no default system prompt; the others match.
  std::vector<ChatMessage> m = conversation("think_history");
  for (std::string model : {"qwen3", "llama3.2", "deepseek-r1-distill"}) {
    ChatTemplate detected = detect_fixture(model);
    EXPECT_EQ(ChatTemplate::by_name(detected.name()).render(m), detected.render(m)) << model;
  }
}

TEST(ChatTemplate, ThinkMarkersPerFamily) {
  for (std::string model : {"smollm2", "qwen2.5", "llama3.2"}) {
    ChatTemplate t = detect_fixture(model);
    EXPECT_EQ(t.think_start(), "") << model;
    EXPECT_EQ(t.think_end(), "") << model;
  }
  for (std::string model : {"qwen3", "deepseek-r1-distill"}) {
    ChatTemplate t = detect_fixture(model);
    EXPECT_EQ(t.think_start(), "<think>") << model;
    EXPECT_EQ(t.think_end(), "</think>") << model;
  }
}

TEST(ChatTemplate, StopTokensPerFamily) {
  using V = std::vector<std::string>;
  EXPECT_EQ(detect_fixture("smollm2").stop_tokens(), (V{"<|im_end|>", "<|endoftext|>"}));
  EXPECT_EQ(detect_fixture("qwen2.5").stop_tokens(), (V{"<|im_end|>", "<|endoftext|>"}));
  EXPECT_EQ(detect_fixture("qwen3").stop_tokens(), (V{"<|im_end|>", "<|endoftext|>"}));
  EXPECT_EQ(detect_fixture("llama3.2").stop_tokens(), (V{"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"}));
  EXPECT_EQ(detect_fixture("deepseek-r1-distill").stop_tokens(), (V{"<｜end▁of▁sentence｜>"}));
}

TEST(ChatTemplate, BosIsWrittenOnlyByTemplatesThatWriteIt) {
  std::vector<ChatMessage> m = {{"user", "hi"}};
  for (std::string model : {"smollm2", "qwen2.5", "qwen3"}) EXPECT_EQ(detect_fixture(model).bos_token(), "");
  ChatTemplate llama = detect_fixture("llama3.2");
  EXPECT_EQ(llama.bos_token(), "<|begin_of_text|>");
  EXPECT_TRUE(llama.render(m).starts_with("<|begin_of_text|><|start_header_id|>"));
  ChatTemplate r1 = detect_fixture("deepseek-r1-distill");
  EXPECT_EQ(r1.bos_token(), "<｜begin▁of▁sentence｜>");
  EXPECT_TRUE(r1.render(m).starts_with("<｜begin▁of▁sentence｜><｜User｜>"));
}

TEST(ChatTemplate, OnlyDeepSeekPromptOpensAThinkBlock) {
  ChatTemplate r1 = detect_fixture("deepseek-r1-distill");
  EXPECT_TRUE(r1.prompt_opens_think());
  EXPECT_FALSE(r1.prompt_opens_think({.add_generation_prompt = false}));
  for (std::string model : {"smollm2", "qwen2.5", "qwen3", "llama3.2"}) {
    EXPECT_FALSE(detect_fixture(model).prompt_opens_think()) << model;
    EXPECT_FALSE(detect_fixture(model).prompt_opens_think({.enable_thinking = false})) << model;
  }
}

TEST(ChatTemplate, BadConversationsAreClearErrors) {
  for (std::string model : {"smollm2", "qwen3", "llama3.2", "deepseek-r1-distill"}) {
    ChatTemplate t = detect_fixture(model);
    EXPECT_THROW(t.render(std::vector<ChatMessage>{}), Error) << model;
    std::vector<ChatMessage> tool = {{"user", "q"}, {"tool", "42"}};
    try {
      t.render(tool);
      FAIL() << "expected flint::Error for role tool";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'tool'"), std::string::npos) << e.what();
    }
  }
}

TEST(ChatTemplate, Llama3DateStringFormatsLikeStrftime) {
  using namespace std::chrono;
  EXPECT_EQ(ChatTemplate::date_string(year{2025} / March / day{5}), "05 Mar 2025");
  EXPECT_EQ(ChatTemplate::date_string(year{2024} / July / day{26}), "26 Jul 2024");
  EXPECT_EQ(ChatTemplate::date_string(year{1999} / December / day{31}), "31 Dec 1999");
  EXPECT_EQ(ChatOptions{}.date_string, "26 Jul 2024");
  EXPECT_THROW(ChatTemplate::date_string(year{2025} / February / day{30}), Error);
}

TEST(ChatTemplate, Llama3TrimLeavesMalformedUtf8Alone) {
  ChatTemplate t = ChatTemplate::by_name("llama3");
  std::vector<ChatMessage> m = {{"user", std::string(" \xe3\x80 x \xc2")}};  // truncated sequences
  std::string out = t.render(m, {.add_generation_prompt = false});
  EXPECT_NE(out.find("<|end_header_id|>\n\n\xe3\x80 x \xc2<|eot_id|>"), std::string::npos);
}

}  // namespace
}  // namespace flint
