#include "model/fault_injection.h"

#include <cerrno>
#include <cstdlib>

#include "common/error.h"

namespace flint {

std::optional<int64_t> fatal_after_steps_from_env() {
  const char* v = std::getenv(kFatalAfterStepsEnv);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v, &end, 10);
  if (errno || *end || n < 0) fail(kFatalAfterStepsEnv, "=", v, ": want a whole number of steps >= 0");
  return int64_t(n);
}

FatalFaultBackend::FatalFaultBackend(std::unique_ptr<Backend> inner, int64_t good_steps)
    : inner_(std::move(inner)), good_steps_(good_steps) {
  if (!inner_) fail("FatalFaultBackend: no backend to wrap");
}

void FatalFaultBackend::before_step() {
  if (steps_ >= good_steps_) {
    if (fatal_.empty())
      fatal_ = "an injected fatal fault after " + std::to_string(good_steps_) + " steps (" + kFatalAfterStepsEnv + ")";
    throw Error("the forward step: " + fatal_);
  }
  ++steps_;
}

void FatalFaultBackend::forward(const StepPlan& plan, float* logits) {
  before_step();
  inner_->forward(plan, logits);
}

void FatalFaultBackend::forward_sample(const StepPlan& plan, const cpu::SampleBatch& batch, int32_t* token_ids,
                                       float* logprobs) {
  before_step();
  inner_->forward_sample(plan, batch, token_ids, logprobs);
}

std::string FatalFaultBackend::fatal_error() const {
  const std::string inner = inner_->fatal_error();
  return inner.empty() ? fatal_ : inner;
}

}  // namespace flint
