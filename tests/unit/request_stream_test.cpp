// RequestStream: coalescing past max_pending (per channel), the final event,
// the listener (called unlocked), and pop's timeout.
#include "engine/request.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace flint {
namespace {

using namespace std::chrono_literals;

StreamDelta delta(Channel channel, std::string text, int32_t id) {
  StreamDelta d;
  d.channel = channel;
  d.text = std::move(text);
  d.token_ids = {id};
  d.logprobs = {{.token_id = id, .logprob = -0.5f * float(id), .top = {}}};
  return d;
}

StreamDelta pop_delta(RequestStream& stream) {
  std::optional<StreamEvent> event = stream.try_pop();
  EXPECT_TRUE(event);
  if (!event) return {};
  EXPECT_TRUE(std::holds_alternative<StreamDelta>(*event));
  return std::holds_alternative<StreamDelta>(*event) ? std::get<StreamDelta>(std::move(*event)) : StreamDelta{};
}

TEST(RequestStream, DeltasBeyondMaxPendingAreMergedIntoTheLastDeltaOfTheSameChannel) {
  RequestStream stream(1, /*max_pending=*/2);
  for (int32_t i = 0; i < 5; ++i) stream.push(delta(Channel::Content, std::string(1, char('a' + i)), i));
  EXPECT_EQ(stream.num_pending(), 2u);
  const StreamDelta first = pop_delta(stream);
  EXPECT_EQ(first.text, "a");
  EXPECT_EQ(first.token_ids, std::vector<int32_t>{0});
  const StreamDelta merged = pop_delta(stream);
  EXPECT_EQ(merged.text, "bcde");
  EXPECT_EQ(merged.token_ids, (std::vector<int32_t>{1, 2, 3, 4}));
  ASSERT_EQ(merged.logprobs.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(merged.logprobs[i].token_id, int32_t(i) + 1);
    EXPECT_FLOAT_EQ(merged.logprobs[i].logprob, -0.5f * float(i + 1));
  }
  EXPECT_FALSE(stream.try_pop());
}

TEST(RequestStream, ARoomyQueueKeepsEveryDeltaApart) {
  RequestStream stream(1, /*max_pending=*/8);
  for (int32_t i = 0; i < 5; ++i) stream.push(delta(Channel::Content, "x", i));
  EXPECT_EQ(stream.num_pending(), 5u);
}

TEST(RequestStream, DeltasOfDifferentChannelsAreNotMerged) {
  RequestStream stream(1, /*max_pending=*/1);
  stream.push(delta(Channel::Reasoning, "r1", 1));
  stream.push(delta(Channel::Content, "c1", 2));  // past the bound, other channel: queued
  stream.push(delta(Channel::Content, "c2", 3));  // merged into c1
  EXPECT_EQ(stream.num_pending(), 2u);
  const StreamDelta reasoning = pop_delta(stream);
  EXPECT_EQ(reasoning.channel, Channel::Reasoning);
  EXPECT_EQ(reasoning.text, "r1");
  const StreamDelta content = pop_delta(stream);
  EXPECT_EQ(content.channel, Channel::Content);
  EXPECT_EQ(content.text, "c1c2");
  EXPECT_EQ(content.token_ids, (std::vector<int32_t>{2, 3}));
}

TEST(RequestStream, TheFinalEventIsNeverMergedAndNothingIsAcceptedAfterIt) {
  RequestStream stream(1, /*max_pending=*/1);
  stream.push(delta(Channel::Content, "a", 1));
  EXPECT_FALSE(stream.finished());
  StreamFinal final;
  final.reason = FinishReason::Length;
  stream.push(final);
  EXPECT_TRUE(stream.finished());
  EXPECT_EQ(stream.num_pending(), 2u);
  stream.push(delta(Channel::Content, "late", 2));
  StreamFinal second;
  second.reason = FinishReason::Error;
  stream.push(second);
  EXPECT_EQ(stream.num_pending(), 2u);
  EXPECT_EQ(pop_delta(stream).text, "a");
  std::optional<StreamEvent> last = stream.try_pop();
  ASSERT_TRUE(last);
  ASSERT_TRUE(std::holds_alternative<StreamFinal>(*last));
  EXPECT_EQ(std::get<StreamFinal>(*last).reason, FinishReason::Length);
  EXPECT_FALSE(stream.try_pop());
}

TEST(RequestStream, TheListenerRunsAfterEachPushWithoutTheLockSoItMayPop) {
  RequestStream stream(1);
  std::vector<std::string> seen;
  int calls = 0;
  stream.set_listener([&] {
    ++calls;
    EXPECT_EQ(stream.num_pending(), 1u);  // the event is queued before the call
    while (std::optional<StreamEvent> event = stream.try_pop())
      if (auto* d = std::get_if<StreamDelta>(&*event)) seen.push_back(d->text);
      else seen.push_back("final");
  });
  stream.push(delta(Channel::Content, "a", 1));
  stream.push(delta(Channel::Reasoning, "b", 2));
  stream.push(StreamFinal{});
  stream.push(delta(Channel::Content, "ignored", 3));  // after the final: no call
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "final"}));
}

TEST(RequestStream, ANewListenerReplacesTheOldOne) {
  RequestStream stream(1);
  int first = 0, second = 0;
  stream.set_listener([&] { ++first; });
  stream.push(delta(Channel::Content, "a", 1));
  stream.set_listener([&] { ++second; });
  stream.push(delta(Channel::Content, "b", 2));
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 1);
}

TEST(RequestStream, PopWithATimeoutReturnsNulloptWhenNothingArrives) {
  RequestStream stream(1);
  const Clock::time_point start = Clock::now();
  EXPECT_FALSE(stream.pop(20ms));
  EXPECT_GE(Clock::now() - start, 20ms);
  EXPECT_FALSE(stream.try_pop());
}

TEST(RequestStream, PopWakesForAPushFromAnotherThread) {
  RequestStream stream(1);
  std::atomic<int> listened{0};
  stream.set_listener([&] { ++listened; });
  std::thread producer([&] {
    std::this_thread::sleep_for(10ms);
    stream.push(delta(Channel::Content, "hi", 7));
  });
  std::optional<StreamEvent> event = stream.pop(60s);
  producer.join();
  ASSERT_TRUE(event);
  EXPECT_EQ(std::get<StreamDelta>(*event).text, "hi");
  EXPECT_EQ(listened.load(), 1);
}

}  // namespace
}  // namespace flint
