// ReasoningSplitter: splits a request's detokenized output into reasoning and
// content at the think markers, holding back only text that may still be a marker.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "engine/request.h"

namespace flint {

// Where the output stands. Undecided: nothing but whitespace and a prefix of
// think_start yet, so whether the model opens a think block is not known.
// Moves only forward: Undecided → Reasoning → Content, or Undecided → Content.
enum class ReasoningState { Undecided, Reasoning, Content };

struct ReasoningPiece {
  Channel channel;
  std::string text;
};

// Fed text in output order; hands back text per channel with the markers removed.
//  - Split off (all content) when think_end is empty.
//  - Starts in Reasoning when starts_in_reasoning (the prompt opened the block).
//  - Otherwise, with think_start set, starts Undecided: output that begins with
//    think_start (after optional whitespace, dropped with it) opens the block;
//    anything else makes the whole output content. think_start later in the
//    output is plain text.
//  - In Reasoning, text up to think_end is reasoning; the marker is dropped and
//    everything after it is content (its leading whitespace kept, as written).
// The text handed back is exact: reasoning + markers + content == what was fed,
// less the leading whitespace before a think_start.
class ReasoningSplitter {
 public:
  explicit ReasoningSplitter(const ReasoningOptions& options);

  ReasoningState state() const { return state_; }
  // Whether a think block was ever open (from the prompt or by the model).
  bool opened() const { return opened_; }

  // Appends to `out` the text now certain, at most one piece per channel,
  // reasoning first; a suffix that may still become a marker is held back.
  void push(std::string_view text, std::vector<ReasoningPiece>& out);
  // The output ended: held text goes out in the current channel (Undecided → content).
  void flush(std::vector<ReasoningPiece>& out);
  // The engine closed the block itself (reasoning budget): held text goes out
  // as reasoning and what follows is content.
  void close(std::vector<ReasoningPiece>& out);

 private:
  void emit(Channel channel, std::string_view text, std::vector<ReasoningPiece>& out);

  std::string think_start_, think_end_;
  ReasoningState state_;
  bool opened_;
  std::string held_;  // fed, not yet handed back
};

}  // namespace flint
