// Helpers for the engine tests: a request's stream read to its end, and a backend
// that holds its forward passes until the test lets them go.
#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/request.h"
#include "model/backend.h"

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

// Holds every forward until opened, and counts the calls that arrived.
class GatedBackend : public Backend {
 public:
  explicit GatedBackend(Backend& inner) : inner_(inner) {}
  void forward(const StepPlan& plan, float* logits) override {
    {
      std::unique_lock lock(mu_);
      ++num_entered_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return open_; });
    }
    inner_.forward(plan, logits);
  }
  const ModelConfig& config() const override { return inner_.config(); }
  int32_t block_size() const override { return inner_.block_size(); }
  int32_t num_kv_blocks() const override { return inner_.num_kv_blocks(); }
  bool decode_matches_prefill() const override { return inner_.decode_matches_prefill(); }

  void set_open(bool open) {
    {
      std::lock_guard lock(mu_);
      open_ = open;
    }
    cv_.notify_all();
  }
  bool wait_entered(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(60), [&] { return num_entered_ >= n; });
  }

 private:
  Backend& inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int num_entered_ = 0;
};

}  // namespace flint::test
