// FatalFaultBackend and FLINT_TEST_FATAL_AFTER_STEPS (model/fault_injection.h): the test hook that makes any
// backend fail for good after N steps, as a faulted GPU does. The engine's handling of such a backend is in
// engine_test.cpp; flintd's (health, exit status) in tests/e2e/test_flintd_lifecycle.py.
#include "model/fault_injection.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "common/error.h"

namespace flint {
namespace {

// Counts the steps that reach it; reports a fatal error of its own when told to.
class CountingBackend : public Backend {
 public:
  void forward(const StepPlan&, float*) override { ++forwards; }
  void forward_sample(const StepPlan&, const cpu::SampleBatch&, int32_t*, float*) override { ++samples; }
  bool samples_on_device() const override { return true; }
  bool decode_matches_prefill() const override { return false; }
  const ModelConfig& config() const override { return config_; }
  int32_t block_size() const override { return 16; }
  int32_t num_kv_blocks() const override { return 7; }
  std::string fatal_error() const override { return own_fatal; }

  int forwards = 0, samples = 0;
  std::string own_fatal;

 private:
  ModelConfig config_;
};

TEST(FatalFaultBackend, RunsItsGoodStepsThenFailsEveryStepForGood) {
  auto counting = std::make_unique<CountingBackend>();
  CountingBackend* inner = counting.get();
  FatalFaultBackend backend(std::move(counting), 3);
  StepPlan plan;
  cpu::SampleBatch batch;
  EXPECT_TRUE(backend.samples_on_device());
  EXPECT_FALSE(backend.decode_matches_prefill());
  EXPECT_EQ(backend.block_size(), 16);
  EXPECT_EQ(backend.num_kv_blocks(), 7);
  backend.forward(plan, nullptr);
  backend.forward_sample(plan, batch, nullptr, nullptr);
  backend.forward(plan, nullptr);
  EXPECT_EQ(backend.fatal_error(), "");
  for (int i = 0; i < 3; ++i) {
    try {
      i % 2 ? backend.forward_sample(plan, batch, nullptr, nullptr) : backend.forward(plan, nullptr);
      ADD_FAILURE() << "step " << 4 + i << " ran";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("after 3 steps (FLINT_TEST_FATAL_AFTER_STEPS)"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(inner->forwards, 2);
  EXPECT_EQ(inner->samples, 1);
  EXPECT_EQ(backend.steps_run(), 3);
  EXPECT_NE(backend.fatal_error().find("an injected fatal fault"), std::string::npos) << backend.fatal_error();
}

TEST(FatalFaultBackend, ZeroGoodStepsFailsTheFirstAndTheInnerFatalErrorComesFirst) {
  auto counting = std::make_unique<CountingBackend>();
  CountingBackend* inner = counting.get();
  FatalFaultBackend backend(std::move(counting), 0);
  EXPECT_THROW(backend.forward(StepPlan{}, nullptr), Error);
  EXPECT_EQ(inner->forwards, 0);
  inner->own_fatal = "cudaErrorIllegalAddress";
  EXPECT_EQ(backend.fatal_error(), "cudaErrorIllegalAddress");
}

// Sets FLINT_TEST_FATAL_AFTER_STEPS for one scope, then restores it.
class ScopedEnv {
 public:
  explicit ScopedEnv(const char* value) {
    if (const char* old = std::getenv(kFatalAfterStepsEnv)) old_ = old;
    value ? setenv(kFatalAfterStepsEnv, value, 1) : unsetenv(kFatalAfterStepsEnv);
  }
  ~ScopedEnv() { old_ ? setenv(kFatalAfterStepsEnv, old_->c_str(), 1) : unsetenv(kFatalAfterStepsEnv); }

 private:
  std::optional<std::string> old_;
};

TEST(FatalFaultBackend, TheEnvironmentVariableIsAWholeNumberOrAbsent) {
  {
    ScopedEnv env(nullptr);
    EXPECT_EQ(fatal_after_steps_from_env(), std::nullopt);
  }
  {
    ScopedEnv env("");
    EXPECT_EQ(fatal_after_steps_from_env(), std::nullopt);
  }
  {
    ScopedEnv env("0");
    EXPECT_EQ(fatal_after_steps_from_env(), 0);
  }
  {
    ScopedEnv env("250");
    EXPECT_EQ(fatal_after_steps_from_env(), 250);
  }
  for (const char* bad : {"-1", "ten", "3x", "99999999999999999999999"}) {
    ScopedEnv env(bad);
    try {
      fatal_after_steps_from_env();
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("FLINT_TEST_FATAL_AFTER_STEPS=" + std::string(bad)), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace flint
