// A test hook for the path a faulted GPU takes through the server, with no GPU: FLINT_TEST_FATAL_AFTER_STEPS=N in
// the environment of flintd or flint-run makes the backend (any device) run N steps, then fail every later one
// and report itself unusable, as CudaBackend does after a kernel fault poisons its CUDA context
// (Backend::fatal_error). The engine then ends every request with Unavailable, flintd's health goes NOT_SERVING
// and it exits with status 1 (tests/e2e/test_flintd_lifecycle.py). Unset, nothing changes.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "model/backend.h"

namespace flint {

inline constexpr const char* kFatalAfterStepsEnv = "FLINT_TEST_FATAL_AFTER_STEPS";

// The steps FLINT_TEST_FATAL_AFTER_STEPS allows, or none when it is unset or empty; throws flint::Error naming the
// variable when it is not a whole number >= 0.
std::optional<int64_t> fatal_after_steps_from_env();

// Runs `inner`'s first `good_steps` steps (forward or forward_sample calls), then throws from every later one and
// reports fatal_error() from the first failure on. Everything else passes through.
class FatalFaultBackend : public Backend {
 public:
  FatalFaultBackend(std::unique_ptr<Backend> inner, int64_t good_steps);
  void forward(const StepPlan& plan, float* logits) override;
  void forward_sample(const StepPlan& plan, const cpu::SampleBatch& batch, int32_t* token_ids,
                      float* logprobs) override;
  bool samples_on_device() const override { return inner_->samples_on_device(); }
  bool decode_matches_prefill() const override { return inner_->decode_matches_prefill(); }
  const ModelConfig& config() const override { return inner_->config(); }
  int32_t block_size() const override { return inner_->block_size(); }
  int32_t num_kv_blocks() const override { return inner_->num_kv_blocks(); }
  std::string fatal_error() const override;
  void set_observer(LayerObserver observer) override { inner_->set_observer(std::move(observer)); }
  int64_t steps_run() const { return steps_; }

 private:
  void before_step();  // throws once the good steps are spent

  std::unique_ptr<Backend> inner_;
  int64_t good_steps_, steps_ = 0;  // the engine's thread only, as every forward call
  std::string fatal_;
};

}  // namespace flint
