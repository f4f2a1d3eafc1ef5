// Engine tests of the reasoning split and budget: a scripted backend drives exact
// token sequences (markers whole, split into bytes, crossing a token), and the
// tiny random-weight model with a tokenizer that has <think> and </think> shows
// that the model really continues from a forced think_end.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <mutex>
#include <sstream>

#include "engine/engine.h"
#include "engine/offline_runner.h"
#include "model/cpu_backend.h"
#include "model/model_loader.h"
#include "engine_test_util.h"

namespace flint {
namespace {

using namespace std::chrono_literals;

// The tiny-llama vocabulary (512) with ids 509 and 510 renamed <think> and </think>:
// added tokens that are not special (as in Qwen3 and DeepSeek-R1), or special.
Tokenizer think_tokenizer(bool special) {
  std::ifstream in(FLINT_TEST_DATA_DIR "/tiny-llama/tokenizer.json");
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string json = buffer.str();
  for (auto [from, to] : {std::pair<std::string, std::string>{"\"<|start_header_id|>\"", "\"<think>\""},
                          {"\"<|end_header_id|>\"", "\"</think>\""}}) {
    const size_t at = json.find(from);
    EXPECT_NE(at, std::string::npos);
    json.replace(at, from.size(), to);
    if (!special) {
      const std::string flag = "\"special\": true";
      const size_t f = json.find(flag, at);
      EXPECT_NE(f, std::string::npos);
      json.replace(f, flag.size(), "\"special\": false");
    }
  }
  return Tokenizer::from_hf_json(json);
}

const Tokenizer& tokenizer() {
  static const Tokenizer t = think_tokenizer(/*special=*/false);
  return t;
}
constexpr int32_t kThinkStart = 509, kThinkEnd = 510;

// One token per byte of `text` (the byte-level vocabulary holds every byte).
std::vector<int32_t> bytes_of(std::string_view text) {
  std::vector<int32_t> ids;
  for (char c : text) {
    const std::string piece = c == ' ' ? "\xC4\xA0" : c == '\n' ? "\xC4\x8A" : std::string(1, c);  // Ġ, Ċ
    std::optional<int32_t> id = tokenizer().find_token(piece);
    EXPECT_TRUE(id) << "no token for byte " << int(c);
    ids.push_back(id.value_or(0));
  }
  return ids;
}

std::vector<int32_t> concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Greedy sampling then returns script[i] as output token i (`filler` past its end):
// the logits row for the token at position p is one-hot at script[p + 1 - prompt_len].
// Records every plan it runs.
class ScriptedBackend : public Backend {
 public:
  ScriptedBackend(int32_t prompt_len, std::vector<int32_t> script, int32_t filler = 300)
      : prompt_len_(prompt_len), script_(std::move(script)), filler_(filler) {
    config_.vocab_size = 512;
  }
  void forward(const StepPlan& plan, float* logits) override {
    plan.validate(block_size(), num_kv_blocks());
    for (size_t r = 0; r < plan.logit_rows.size(); ++r) {
      const int32_t index = plan.positions[size_t(plan.logit_rows[r])] + 1 - prompt_len_;
      const int32_t token = index >= 0 && index < int32_t(script_.size()) ? script_[size_t(index)] : filler_;
      float* row = logits + r * size_t(config_.vocab_size);
      std::fill(row, row + config_.vocab_size, 0.0f);
      row[token] = 1.0f;
    }
    std::lock_guard lock(mu_);
    plans_.push_back(plan);
  }
  const ModelConfig& config() const override { return config_; }
  int32_t block_size() const override { return 4; }
  int32_t num_kv_blocks() const override { return 64; }
  std::vector<StepPlan> plans() const {
    std::lock_guard lock(mu_);
    return plans_;
  }

 private:
  int32_t prompt_len_;
  std::vector<int32_t> script_;
  int32_t filler_;
  ModelConfig config_;
  mutable std::mutex mu_;
  std::vector<StepPlan> plans_;
};

using test::collect;
using test::Collected;

// Every reasoning delta comes before every content delta.
void expect_reasoning_then_content(const Collected& c) {
  bool seen_content = false;
  for (const StreamDelta& d : c.deltas) {
    if (d.channel == Channel::Content) seen_content = true;
    EXPECT_FALSE(seen_content && d.channel == Channel::Reasoning) << "a reasoning delta after content";
  }
}

const std::vector<int32_t> kPrompt = {11, 12, 13, 14, 15};

EngineRequest think_request(int32_t max_tokens, bool starts_in_reasoning) {
  EngineRequest r;
  r.prompt_token_ids = kPrompt;
  r.sampling.temperature = 0.0f;
  r.stopping.max_tokens = max_tokens;
  r.stopping.ignore_eos = true;
  r.reasoning = {.think_start = "<think>", .think_end = "</think>", .starts_in_reasoning = starts_in_reasoning,
                 .budget_tokens = std::nullopt};
  return r;
}

Collected run_script(const std::vector<int32_t>& script, EngineRequest request, const Tokenizer& tok = tokenizer()) {
  ScriptedBackend backend(int32_t(request.prompt_token_ids.size()), script);
  Engine engine(backend, &tok);
  SubmitResult submitted = engine.submit(std::move(request));
  EXPECT_TRUE(submitted.status.ok()) << submitted.status.message;
  if (!submitted.stream) return {};
  return collect(*submitted.stream);
}

TEST(EngineReasoning, SingleTokenMarkersSplitTheOutputAndTheirIdsAreReportedWithoutText) {
  const std::vector<int32_t> thought = bytes_of("plan A"), answer = bytes_of("\n\nyes");
  const std::vector<int32_t> script = concat({{kThinkStart}, thought, {kThinkEnd}, answer});
  const Collected got = run_script(script, think_request(int32_t(script.size()), false));
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->reason, FinishReason::Length);
  EXPECT_EQ(got.reasoning, "plan A");
  EXPECT_EQ(got.content, "\n\nyes");
  EXPECT_EQ(got.token_ids, script);
  EXPECT_EQ(got.reasoning_ids, concat({{kThinkStart}, thought, {kThinkEnd}}));
  EXPECT_EQ(got.final->usage.reasoning_tokens, int32_t(thought.size()) + 2);
  EXPECT_EQ(got.final->usage.completion_tokens, int32_t(script.size()));
  expect_reasoning_then_content(got);
}

TEST(EngineReasoning, MarkersWrittenOneByteATimeAfterLeadingWhitespaceAreFoundAndNotEmitted) {
  const std::vector<int32_t> opening = bytes_of(" \n<think>"), thought = bytes_of("a</b"), closing = bytes_of("</think>"),
                             answer = bytes_of("ok");
  const std::vector<int32_t> script = concat({opening, thought, closing, answer});
  const Collected got = run_script(script, think_request(int32_t(script.size()), false));
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.reasoning, "a</b");
  EXPECT_EQ(got.content, "ok");
  EXPECT_EQ(got.token_ids, script);
  // The ids wait while the start is undecided, then go out as reasoning.
  EXPECT_EQ(got.reasoning_ids, concat({opening, thought, closing}));
  EXPECT_EQ(got.final->usage.reasoning_tokens, int32_t(opening.size() + thought.size() + closing.size()));
  expect_reasoning_then_content(got);
  for (const StreamDelta& d : got.deltas) EXPECT_EQ(d.text.find('>'), std::string::npos) << d.text;
}

TEST(EngineReasoning, ATokenCrossingTheMarkerGivesTwoDeltasAndItsIdGoesWithTheFirst) {
  // think_end "h" ends inside the token "the": "t" is reasoning, "e" content.
  const std::optional<int32_t> the = tokenizer().find_token("the");
  ASSERT_TRUE(the);
  const std::vector<int32_t> script = concat({bytes_of("ab"), {*the}, bytes_of("cd")});
  EngineRequest r = think_request(int32_t(script.size()), /*starts_in_reasoning=*/true);
  r.reasoning.think_end = "h";
  const Collected got = run_script(script, std::move(r));
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.reasoning, "abt");
  EXPECT_EQ(got.content, "ecd");
  auto crossing = std::ranges::find_if(got.deltas, [&](const StreamDelta& d) { return d.token_ids == std::vector{*the}; });
  ASSERT_NE(crossing, got.deltas.end());
  EXPECT_EQ(crossing->channel, Channel::Reasoning);
  EXPECT_EQ(crossing->text, "t");
  ASSERT_NE(crossing + 1, got.deltas.end());
  EXPECT_EQ(crossing[1].channel, Channel::Content);
  EXPECT_EQ(crossing[1].text, "e");
  EXPECT_TRUE(crossing[1].token_ids.empty());
  EXPECT_EQ(got.final->usage.reasoning_tokens, 3);
}

TEST(EngineReasoning, MarkersThatAreSpecialTokensStillSplitTheOutput) {
  static const Tokenizer special = think_tokenizer(/*special=*/true);
  ASSERT_TRUE(special.is_special(kThinkEnd));
  const std::vector<int32_t> script = concat({{kThinkStart}, bytes_of("hm"), {kThinkEnd}, bytes_of("ok")});
  const Collected got = run_script(script, think_request(int32_t(script.size()), false), special);
  EXPECT_EQ(got.reasoning, "hm");
  EXPECT_EQ(got.content, "ok");
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->usage.reasoning_tokens, 4);
}

TEST(EngineReasoning, OutputThatDoesNotOpenABlockIsAllContent) {
  const std::vector<int32_t> script = bytes_of("  <thin air");
  const Collected got = run_script(script, think_request(int32_t(script.size()), false));
  EXPECT_EQ(got.content, "  <thin air");
  EXPECT_TRUE(got.reasoning.empty());
  EXPECT_EQ(got.content_ids, script);
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->usage.reasoning_tokens, 0);
}

TEST(EngineReasoning, StopStringsApplyToContentOnly) {
  const std::vector<int32_t> script = concat({bytes_of("say END"), {kThinkEnd}, bytes_of("fine END more")});
  EngineRequest r = think_request(int32_t(script.size()), /*starts_in_reasoning=*/true);
  r.stopping.stop = {"END"};
  const Collected got = run_script(script, std::move(r));
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->reason, FinishReason::Stop);
  EXPECT_EQ(got.final->matched_stop, "END");
  EXPECT_EQ(got.reasoning, "say END");
  EXPECT_EQ(got.content, "fine ");
}

TEST(EngineReasoning, AnOutputEndingInsideTheBlockFlushesItsHeldTextAsReasoning) {
  const std::vector<int32_t> script = bytes_of("x </thi");
  const Collected got = run_script(script, think_request(int32_t(script.size()), /*starts_in_reasoning=*/true));
  EXPECT_EQ(got.reasoning, "x </thi");
  EXPECT_TRUE(got.content.empty());
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->usage.reasoning_tokens, int32_t(script.size()));
}

TEST(EngineReasoning, ReasoningOptionsAreValidated) {
  ScriptedBackend backend(5, {});
  Engine engine(backend, &tokenizer());
  EngineRequest no_end = think_request(4, true);
  no_end.reasoning.think_end.clear();
  EXPECT_EQ(engine.submit(no_end).status.code, StatusCode::InvalidArgument);
  EngineRequest negative = think_request(4, true);
  negative.reasoning.budget_tokens = -1;
  EXPECT_EQ(engine.submit(negative).status.code, StatusCode::InvalidArgument);
  Engine no_tokenizer(backend, nullptr);
  EXPECT_EQ(no_tokenizer.submit(think_request(4, true)).status.code, StatusCode::InvalidArgument);
}

// --- The reasoning budget -------------------------------------------------------

// "</think>\n\n": more than one id, so the forced tokens are a chunk.
const std::string kThinkEndText = "</think>\n\n";
std::vector<int32_t> think_end_ids() { return tokenizer().encode(kThinkEndText, true, false); }

EngineRequest budget_request(int32_t budget, int32_t max_tokens) {
  EngineRequest r = think_request(max_tokens, /*starts_in_reasoning=*/true);
  r.reasoning.think_end = kThinkEndText;
  r.reasoning.budget_tokens = budget;
  return r;
}

std::vector<int32_t> slice(const std::vector<int32_t>& v, size_t begin, size_t end) {
  return std::vector<int32_t>(v.begin() + long(begin), v.begin() + long(std::min(end, v.size())));
}

TEST(EngineReasoning, BudgetOfNAppendsThinkEndAfterNReasoningTokensAndTheAnswerFollowsAsContent) {
  const std::vector<int32_t> marker = think_end_ids();
  ASSERT_GE(marker.size(), 2u);
  ASSERT_EQ(marker[0], kThinkEnd);
  const size_t k = marker.size();
  const std::vector<int32_t> script = bytes_of("abcdefghijklmnop");
  const int32_t max_tokens = int32_t(3 + k + 4);
  ScriptedBackend backend(int32_t(kPrompt.size()), script);
  Engine engine(backend, &tokenizer());
  SubmitResult submitted = engine.submit(budget_request(3, max_tokens));
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.message;
  const Collected got = collect(*submitted.stream);
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->reason, FinishReason::Length);
  EXPECT_EQ(got.reasoning, "abc");
  EXPECT_EQ(got.reasoning_ids, concat({slice(script, 0, 3), marker}));
  // The model goes on at output position 3 + k: the script's letters from there.
  EXPECT_EQ(got.content_ids, slice(script, 3 + k, size_t(max_tokens)));
  EXPECT_EQ(got.content, std::string("abcdefghijklmnop").substr(3 + k, 4));
  EXPECT_EQ(got.final->usage.reasoning_tokens, int32_t(3 + k));
  EXPECT_EQ(got.final->usage.completion_tokens, max_tokens);
  auto forced = std::ranges::find_if(got.deltas, [&](const StreamDelta& d) { return d.token_ids == marker; });
  ASSERT_NE(forced, got.deltas.end());
  EXPECT_EQ(forced->channel, Channel::Reasoning);
  EXPECT_TRUE(forced->text.empty());
  expect_reasoning_then_content(got);
  // The step after the budget fed the last sampled token and the marker as one
  // chunk, with the logits row on the marker's last token.
  const std::vector<int32_t> chunk = concat({{script[2]}, marker});
  bool seen = false;
  for (const StepPlan& plan : backend.plans())
    if (plan.token_ids == chunk) {
      seen = true;
      EXPECT_EQ(plan.logit_rows, std::vector<int32_t>{int32_t(k)});
      EXPECT_EQ(plan.positions.front(), int32_t(kPrompt.size()) + 2);
    }
  EXPECT_TRUE(seen);
}

TEST(EngineReasoning, BudgetZeroOnABlockThePromptOpenedClosesItBeforeTheFirstSample) {
  const std::vector<int32_t> marker = think_end_ids();
  const size_t k = marker.size();
  const std::vector<int32_t> script = bytes_of("abcdefghij");
  ScriptedBackend backend(int32_t(kPrompt.size()), script);
  Engine engine(backend, &tokenizer());
  SubmitResult submitted = engine.submit(budget_request(0, int32_t(k) + 3));
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.message;
  const Collected got = collect(*submitted.stream);
  ASSERT_FALSE(got.deltas.empty());
  EXPECT_EQ(got.deltas[0].channel, Channel::Reasoning);
  EXPECT_EQ(got.deltas[0].token_ids, marker);
  EXPECT_TRUE(got.reasoning.empty());
  EXPECT_EQ(got.content_ids, slice(script, k, k + 3));
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->usage.reasoning_tokens, int32_t(k));
  ASSERT_FALSE(backend.plans().empty());
  EXPECT_EQ(backend.plans()[0].token_ids, concat({kPrompt, marker}));  // one prefill, then the first sample
}

TEST(EngineReasoning, AForcedThinkEndThatDoesNotFitInMaxTokensEndsWithLength) {
  const std::vector<int32_t> marker = think_end_ids();
  const int32_t k = int32_t(marker.size());
  const std::vector<int32_t> script = bytes_of("abcdefghij");
  const Collected short_of = run_script(script, budget_request(3, 3 + k - 1));
  ASSERT_TRUE(short_of.final);
  EXPECT_EQ(short_of.final->reason, FinishReason::Length);
  EXPECT_EQ(short_of.token_ids, slice(script, 0, 3));  // no part of the marker
  EXPECT_EQ(short_of.final->usage.completion_tokens, 3);
  EXPECT_EQ(short_of.final->usage.reasoning_tokens, 3);

  const Collected exactly = run_script(script, budget_request(3, 3 + k));
  ASSERT_TRUE(exactly.final);
  EXPECT_EQ(exactly.final->reason, FinishReason::Length);
  EXPECT_EQ(exactly.token_ids, concat({slice(script, 0, 3), marker}));
  EXPECT_TRUE(exactly.content.empty());
  EXPECT_EQ(exactly.final->usage.completion_tokens, 3 + k);
}

TEST(EngineReasoning, AModelThatClosesTheBlockWithinItsBudgetIsLeftAlone) {
  const std::vector<int32_t> script = concat({bytes_of("ab"), {kThinkEnd}, bytes_of("xyz")});
  EngineRequest r = think_request(int32_t(script.size()), /*starts_in_reasoning=*/true);
  r.reasoning.budget_tokens = 5;
  const Collected got = run_script(script, std::move(r));
  EXPECT_EQ(got.token_ids, script);
  EXPECT_EQ(got.content, "xyz");
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->usage.reasoning_tokens, 3);
}

// The tiny random-weight model: what follows the forced marker is what the model
// computes for prompt + N tokens + marker ids.
const LoadedModel& tiny() {
  static const LoadedModel model = load_model(FLINT_TEST_DATA_DIR "/tiny-llama");
  return model;
}

CpuBackend tiny_backend() {
  return CpuBackend(tiny().config, tiny().weights, {.num_kv_blocks = 32, .block_size = 16, .num_threads = 2});
}

std::vector<int32_t> greedy_after(const std::vector<int32_t>& prefix, int32_t n) {
  CpuBackend backend = tiny_backend();
  OfflineRunner runner(backend);
  std::vector<float> logits = runner.feed(prefix);
  std::vector<int32_t> out;
  for (int32_t i = 0; i < n; ++i) {
    out.push_back(int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    if (i + 1 < n) logits = runner.feed(std::vector<int32_t>{out.back()});
  }
  return out;
}

TEST(EngineReasoning, OnTheTinyModelTheAnswerAfterAForcedThinkEndIsWhatTheModelComputesFromThere) {
  ASSERT_EQ(tokenizer().vocab_size(), tiny().config.vocab_size);
  const std::vector<int32_t> marker = think_end_ids();
  const int32_t k = int32_t(marker.size()), kBudget = 5, kAnswer = 6;
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < 12; ++i) prompt.push_back((12 * 131 + i * 17) % 500);
  const std::vector<int32_t> thought = greedy_after(prompt, kBudget);
  ASSERT_EQ(std::ranges::find(thought, kThinkEnd), thought.end()) << "the model closed the block by itself";
  const std::vector<int32_t> answer = greedy_after(concat({prompt, thought, marker}), kAnswer);

  CpuBackend backend = tiny_backend();
  Engine engine(backend, &tokenizer());
  EngineRequest r = budget_request(kBudget, kBudget + k + kAnswer);
  r.prompt_token_ids = prompt;
  SubmitResult submitted = engine.submit(std::move(r));
  ASSERT_TRUE(submitted.status.ok()) << submitted.status.message;
  const Collected got = collect(*submitted.stream);
  ASSERT_TRUE(got.final);
  EXPECT_EQ(got.final->reason, FinishReason::Length);
  EXPECT_EQ(got.reasoning_ids, concat({thought, marker}));
  EXPECT_EQ(got.content_ids, answer);
  EXPECT_EQ(got.token_ids, concat({thought, marker, answer}));
  EXPECT_EQ(got.final->usage.reasoning_tokens, kBudget + k);
  EXPECT_EQ(got.final->usage.completion_tokens, kBudget + k + kAnswer);
  EXPECT_EQ(got.reasoning, tokenizer().decode(thought, /*skip_special=*/true));
  EXPECT_EQ(got.content, tokenizer().decode(answer, /*skip_special=*/true));
}

TEST(EngineReasoning, OnTheTinyModelBudgetZeroAnswersFromPromptPlusThinkEnd) {
  const std::vector<int32_t> marker = think_end_ids();
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < 9; ++i) prompt.push_back((9 * 131 + i * 17 + 3) % 500);
  const std::vector<int32_t> answer = greedy_after(concat({prompt, marker}), 5);
  CpuBackend backend = tiny_backend();
  Engine engine(backend, &tokenizer());
  EngineRequest r = budget_request(0, int32_t(marker.size()) + 5);
  r.prompt_token_ids = prompt;
  const Collected got = collect(*engine.submit(std::move(r)).stream);
  EXPECT_EQ(got.token_ids, concat({marker, answer}));
  EXPECT_EQ(got.content_ids, answer);
}

TEST(EngineReasoning, BudgetRequestsOfMixedPrioritiesUnderPreemptionEachGetTheirSoloTokens) {
  const std::vector<int32_t> marker = think_end_ids();
  const int32_t k = int32_t(marker.size()), kBudget = 8, kAnswer = 8;
  const std::vector<int32_t> lens = {20, 35, 28, 41, 17, 30}, priorities = {0, 2, 1, 2, 0, 5};
  std::vector<std::vector<int32_t>> prompts, want;
  for (size_t i = 0; i < lens.size(); ++i) {
    std::vector<int32_t> prompt;
    for (int32_t j = 0; j < lens[i]; ++j) prompt.push_back((lens[i] * 131 + j * 17 + int32_t(i) * 7) % 500);
    const std::vector<int32_t> thought = greedy_after(prompt, kBudget);
    ASSERT_EQ(std::ranges::find(thought, kThinkEnd), thought.end()) << "request " << i << " closed the block by itself";
    want.push_back(concat({thought, marker, greedy_after(concat({prompt, thought, marker}), kAnswer)}));
    prompts.push_back(std::move(prompt));
  }
  // 6 blocks of 16 hold 96 of the ~250 tokens the six finish with.
  CpuBackend backend(tiny().config, tiny().weights, {.num_kv_blocks = 6, .block_size = 16, .num_threads = 2});
  Engine engine(backend, &tokenizer(), {.scheduler = {.max_num_seqs = 6, .max_num_batched_tokens = 24}});
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EngineRequest r = budget_request(kBudget, kBudget + k + kAnswer);
    r.prompt_token_ids = prompts[i];
    r.priority = priorities[i];
    SubmitResult submitted = engine.submit(std::move(r));
    ASSERT_TRUE(submitted.status.ok()) << submitted.status.message;
    streams.push_back(submitted.stream);
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    const Collected got = collect(*streams[i]);
    EXPECT_EQ(got.token_ids, want[i]) << "request " << i;
    ASSERT_TRUE(got.final);
    EXPECT_EQ(got.final->usage.reasoning_tokens, kBudget + k);
  }
  EXPECT_GT(engine.stats().num_preempted, 0);
  EXPECT_EQ(engine.stats().num_free_blocks, engine.stats().num_blocks);
}

}  // namespace
}  // namespace flint
