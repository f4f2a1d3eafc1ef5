// Backend: runs one StepPlan through the model and returns logits; owns the
// weights on its device and the paged KV cache storage.
#pragma once
#include <cstdint>

#include "model/config.h"
#include "model/step_plan.h"

namespace flint {

class Backend {
 public:
  virtual ~Backend() = default;
  // logits: (plan.logit_rows.size(), vocab_size) fp32, row i for token plan.logit_rows[i].
  // Writes K/V of every token of the plan into its cache slot.
  virtual void forward(const StepPlan& plan, float* logits) = 0;
  virtual const ModelConfig& config() const = 0;
  virtual int32_t block_size() const = 0;
  virtual int32_t num_kv_blocks() const = 0;
};

}  // namespace flint
