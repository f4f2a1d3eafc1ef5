// StepPlan::validate: a plan the backends may run, or a flint::Error naming what is wrong with it.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "common/error.h"
#include "model/step_plan.h"

namespace flint {
namespace {

// A decode (one token at position 4 of 5) and a prompt's chunk of 3 tokens; blocks of 4 slots, 8 blocks.
StepPlan plan() {
  StepPlan p;
  p.add_sequence({7}, 5, {0, 1}, true);
  p.add_sequence({1, 2, 3}, 3, {2}, true);
  p.num_decode_seqs = 1;
  return p;
}

void expect_refused(const StepPlan& p, const std::string& why) {
  try {
    p.validate(4, 8);
    ADD_FAILURE() << "accepted; expected: " << why;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
}

TEST(StepPlan, ValidatesTheDecodeCountAndTheArrays) {
  EXPECT_NO_THROW(plan().validate(4, 8));
  for (int32_t n : {-1, 0, 2}) {
    StepPlan p = plan();
    p.num_decode_seqs = n;
    EXPECT_NO_THROW(p.validate(4, 8)) << n;
  }
  StepPlan p = plan();
  p.num_decode_seqs = 3;
  expect_refused(p, "num_decode_seqs 3 outside [-1, 2]");
  p.num_decode_seqs = -2;
  expect_refused(p, "num_decode_seqs -2 outside [-1, 2]");
  p = plan();
  p.positions[0] = 5;
  expect_refused(p, "position 5 outside [0, 5)");
  p = plan();
  p.block_table[1] = 8;
  expect_refused(p, "block id 8 outside [0, 8)");
}

}  // namespace
}  // namespace flint
