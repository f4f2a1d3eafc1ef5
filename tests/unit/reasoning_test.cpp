// ReasoningSplitter on plain strings: channels, markers dropped, markers split
// across pieces, minimal hold-back, flush and close.
#include "engine/reasoning.h"

#include <gtest/gtest.h>

#include <random>

namespace flint {
namespace {

struct Split {
  std::string reasoning, content;
  std::vector<Channel> order;  // channel of every piece, in order
};

void add(Split& split, const std::vector<ReasoningPiece>& pieces) {
  for (const ReasoningPiece& p : pieces) {
    (p.channel == Channel::Reasoning ? split.reasoning : split.content) += p.text;
    split.order.push_back(p.channel);
  }
}

// Feeds `parts` one by one, then flushes.
Split split_all(const ReasoningOptions& options, const std::vector<std::string>& parts) {
  ReasoningSplitter splitter(options);
  Split split;
  for (const std::string& part : parts) {
    std::vector<ReasoningPiece> pieces;
    splitter.push(part, pieces);
    add(split, pieces);
  }
  std::vector<ReasoningPiece> pieces;
  splitter.flush(pieces);
  add(split, pieces);
  return split;
}

std::vector<std::string> chars(const std::string& text) {
  std::vector<std::string> out;
  for (char c : text) out.emplace_back(1, c);
  return out;
}

ReasoningOptions markers(std::string think_start, std::string think_end, bool starts_in_reasoning = false) {
  ReasoningOptions options;
  options.think_start = std::move(think_start);
  options.think_end = std::move(think_end);
  options.starts_in_reasoning = starts_in_reasoning;
  return options;
}

const ReasoningOptions kThink = markers("<think>", "</think>");
const ReasoningOptions kOpened = markers("<think>", "</think>", /*starts_in_reasoning=*/true);

TEST(ReasoningSplitter, TextBeforeThinkEndIsReasoningAndAfterItIsContentWhenThePromptOpenedTheBlock) {
  const Split split = split_all(kOpened, {"Let me think.", "</think>", "\n\nThe answer is 4."});
  EXPECT_EQ(split.reasoning, "Let me think.");
  EXPECT_EQ(split.content, "\n\nThe answer is 4.");  // whitespace after the marker is kept as written
}

TEST(ReasoningSplitter, AModelWrittenThinkStartAfterLeadingWhitespaceOpensTheBlockAndNeitherIsEmitted) {
  const Split split = split_all(kThink, {"\n ", "<think>", "hmm", "</think>", "yes"});
  EXPECT_EQ(split.reasoning, "hmm");
  EXPECT_EQ(split.content, "yes");
}

TEST(ReasoningSplitter, OutputThatDoesNotStartWithThinkStartIsAllContentAndALaterThinkStartIsPlainText) {
  EXPECT_EQ(split_all(kThink, {" <thi", "s is it"}).content, " <this is it");
  const Split later = split_all(kThink, {"Hi ", "<think>", "x", "</think>"});
  EXPECT_EQ(later.content, "Hi <think>x</think>");
  EXPECT_TRUE(later.reasoning.empty());
}

TEST(ReasoningSplitter, MarkersSplitIntoSingleCharactersAreStillFound) {
  const Split split = split_all(kThink, chars("  <think>a < b </thinking> c</think>\n\nanswer </think>"));
  EXPECT_EQ(split.reasoning, "a < b </thinking> c");
  EXPECT_EQ(split.content, "\n\nanswer </think>");  // only the first think_end closes
  EXPECT_EQ(split.order.back(), Channel::Content);
}

TEST(ReasoningSplitter, OnlyTextThatCouldStillBecomeAMarkerIsHeldBack) {
  ReasoningSplitter splitter(kOpened);
  std::vector<ReasoningPiece> pieces;
  splitter.push("abc</thi", pieces);
  ASSERT_EQ(pieces.size(), 1u);
  EXPECT_EQ(pieces[0].text, "abc");
  pieces.clear();
  splitter.push("s", pieces);  // "</this" can no longer be the marker
  ASSERT_EQ(pieces.size(), 1u);
  EXPECT_EQ(pieces[0].text, "</this");
  EXPECT_EQ(pieces[0].channel, Channel::Reasoning);
  pieces.clear();
  splitter.push("<", pieces);
  EXPECT_TRUE(pieces.empty());
  EXPECT_EQ(splitter.state(), ReasoningState::Reasoning);
}

TEST(ReasoningSplitter, OnePushCrossingTheMarkerGivesTwoPiecesReasoningFirst) {
  ReasoningSplitter splitter(kOpened);
  std::vector<ReasoningPiece> pieces;
  splitter.push("x</think>y", pieces);
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].channel, Channel::Reasoning);
  EXPECT_EQ(pieces[0].text, "x");
  EXPECT_EQ(pieces[1].channel, Channel::Content);
  EXPECT_EQ(pieces[1].text, "y");
  EXPECT_EQ(splitter.state(), ReasoningState::Content);
}

TEST(ReasoningSplitter, AnyCutOfTheTextGivesTheSameChannels) {
  const std::string text = " <think>one <th</think > two</thi</think>three </think>";
  const Split whole = split_all(kThink, {text});
  EXPECT_EQ(whole.reasoning, "one <th</think > two</thi");
  EXPECT_EQ(whole.content, "three </think>");
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::string> parts;
    for (size_t i = 0; i < text.size();) {
      const size_t n = std::min(text.size() - i, size_t(rng() % 5));
      parts.push_back(text.substr(i, n));
      i += n;
    }
    const Split split = split_all(kThink, parts);
    EXPECT_EQ(split.reasoning, whole.reasoning) << "trial " << trial;
    EXPECT_EQ(split.content, whole.content) << "trial " << trial;
  }
}

TEST(ReasoningSplitter, FlushReleasesHeldTextInTheCurrentChannel) {
  const Split in_reasoning = split_all(kOpened, {"abc</th"});
  EXPECT_EQ(in_reasoning.reasoning, "abc</th");
  const Split undecided = split_all(kThink, {"  <thi"});
  EXPECT_EQ(undecided.content, "  <thi");
  EXPECT_TRUE(undecided.reasoning.empty());
}

TEST(ReasoningSplitter, CloseSendsHeldTextAsReasoningAndWhatFollowsIsContent) {
  ReasoningSplitter splitter(kOpened);
  std::vector<ReasoningPiece> pieces;
  splitter.push("so </", pieces);
  splitter.close(pieces);
  splitter.push("answer", pieces);
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].channel, Channel::Reasoning);
  EXPECT_EQ(pieces[0].text, "so </");
  EXPECT_EQ(pieces[1].channel, Channel::Content);
  EXPECT_EQ(pieces[1].text, "answer");
}

TEST(ReasoningSplitter, EmptyThinkEndTurnsTheSplitOff) {
  ReasoningSplitter off(markers("<think>", ""));
  EXPECT_EQ(off.state(), ReasoningState::Content);
  EXPECT_FALSE(off.opened());
  const Split split = split_all({}, {"<think>", "x", "</think>"});
  EXPECT_EQ(split.content, "<think>x</think>");
}

TEST(ReasoningSplitter, WithoutThinkStartOnlyThePromptCanOpenTheBlock) {
  EXPECT_EQ(ReasoningSplitter(markers("", "</think>")).state(), ReasoningState::Content);
  ReasoningSplitter opened(markers("", "</think>", /*starts_in_reasoning=*/true));
  EXPECT_EQ(opened.state(), ReasoningState::Reasoning);
  EXPECT_TRUE(opened.opened());
}

}  // namespace
}  // namespace flint
