// Helpers for the engine tests: a request's stream read to its end.
#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "engine/request.h"

namespace flint::test {

// Everything one request streamed, by channel and in all.
struct Collected {
  std::vector<StreamDelta> deltas;
  std::vector<int32_t> token_ids, reasoning_ids, content_ids;
  std::string text, reasoning, content;  // text: both channels in order
  int32_t num_deltas = 0;
  std::optional<StreamFinal> final;
};

// Pops until the final event; a generous timeout, never a fixed sleep.
inline Collected collect(RequestStream& stream) {
  Collected c;
  while (!c.final) {
    std::optional<StreamEvent> event = stream.pop(std::chrono::seconds(60));
    if (!event) {
      ADD_FAILURE() << "no event from request " << stream.id() << " within 60 s";
      return c;
    }
    if (auto* delta = std::get_if<StreamDelta>(&*event)) {
      const bool reasoning = delta->channel == Channel::Reasoning;
      ++c.num_deltas;
      c.token_ids.insert(c.token_ids.end(), delta->token_ids.begin(), delta->token_ids.end());
      auto& ids = reasoning ? c.reasoning_ids : c.content_ids;
      ids.insert(ids.end(), delta->token_ids.begin(), delta->token_ids.end());
      c.text += delta->text;
      (reasoning ? c.reasoning : c.content) += delta->text;
      c.deltas.push_back(std::move(*delta));
    } else {
      c.final = std::get<StreamFinal>(std::move(*event));
    }
  }
  return c;
}

}  // namespace flint::test
