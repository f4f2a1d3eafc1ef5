// ReasoningSplitter: the marker state machine over plain text.
#include "engine/reasoning.h"

#include <algorithm>
#include <utility>

namespace flint {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Length of the longest proper suffix of `text` that is a prefix of `marker`.
size_t partial_marker_suffix(std::string_view text, std::string_view marker) {
  for (size_t k = std::min(text.size(), marker.size() - 1); k > 0; --k)
    if (marker.starts_with(text.substr(text.size() - k))) return k;
  return 0;
}

}  // namespace

ReasoningSplitter::ReasoningSplitter(const ReasoningOptions& options)
    : think_start_(options.think_start), think_end_(options.think_end) {
  if (think_end_.empty()) {
    state_ = ReasoningState::Content;
  } else if (options.starts_in_reasoning) {
    state_ = ReasoningState::Reasoning;
  } else {
    state_ = think_start_.empty() ? ReasoningState::Content : ReasoningState::Undecided;
  }
  opened_ = state_ == ReasoningState::Reasoning;
}

void ReasoningSplitter::emit(Channel channel, std::string_view text, std::vector<ReasoningPiece>& out) {
  if (text.empty()) return;
  if (!out.empty() && out.back().channel == channel)
    out.back().text += text;
  else
    out.push_back({channel, std::string(text)});
}

void ReasoningSplitter::push(std::string_view text, std::vector<ReasoningPiece>& out) {
  if (state_ == ReasoningState::Content) return emit(Channel::Content, text, out);
  held_ += text;
  if (state_ == ReasoningState::Undecided) {
    size_t ws = 0;
    while (ws < held_.size() && is_space(held_[ws])) ++ws;
    const std::string_view rest = std::string_view(held_).substr(ws);
    if (rest.starts_with(think_start_)) {
      held_.erase(0, ws + think_start_.size());
      state_ = ReasoningState::Reasoning;
      opened_ = true;
    } else if (std::string_view(think_start_).starts_with(rest)) {
      return;  // still whitespace and a prefix of think_start
    } else {
      state_ = ReasoningState::Content;
      emit(Channel::Content, std::exchange(held_, std::string()), out);
      return;
    }
  }
  // Reasoning: up to think_end, then content.
  const size_t end = held_.find(think_end_);
  if (end != std::string::npos) {
    emit(Channel::Reasoning, std::string_view(held_).substr(0, end), out);
    emit(Channel::Content, std::string_view(held_).substr(end + think_end_.size()), out);
    held_.clear();
    state_ = ReasoningState::Content;
    return;
  }
  const size_t keep = partial_marker_suffix(held_, think_end_);
  emit(Channel::Reasoning, std::string_view(held_).substr(0, held_.size() - keep), out);
  held_.erase(0, held_.size() - keep);
}

void ReasoningSplitter::flush(std::vector<ReasoningPiece>& out) {
  const Channel channel = state_ == ReasoningState::Reasoning ? Channel::Reasoning : Channel::Content;
  emit(channel, std::exchange(held_, std::string()), out);
  if (state_ == ReasoningState::Undecided) state_ = ReasoningState::Content;
}

void ReasoningSplitter::close(std::vector<ReasoningPiece>& out) {
  emit(state_ == ReasoningState::Reasoning ? Channel::Reasoning : Channel::Content,
       std::exchange(held_, std::string()), out);
  state_ = ReasoningState::Content;
}

}  // namespace flint
