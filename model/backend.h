// Backend: runs one StepPlan through the model and returns logits (or, on a device that samples, only the sampled
// token ids); owns the weights on its device and the paged KV cache storage.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "common/error.h"
#include "kernels/cpu/sampling.h"
#include "model/config.h"
#include "model/step_plan.h"

namespace flint {

// Hook for the per-layer diff (model/backend_diff.h): called with each named intermediate in the order the forward
// pass makes them ("embedding", "layer.3.q", ..., "layer.3.out", "final_norm"), as fp32 (rows, cols) row-major on
// the host. Every backend reports the same names at the same points, so two backends' streams line up.
using LayerObserver = std::function<void(const std::string& name, const float* data, int64_t rows, int64_t cols)>;

class Backend {
 public:
  virtual ~Backend() = default;
  // logits: (plan.logit_rows.size(), vocab_size) fp32, row i for token plan.logit_rows[i].
  // Writes K/V of every token of the plan into its cache slot.
  virtual void forward(const StepPlan& plan, float* logits) = 0;
  virtual const ModelConfig& config() const = 0;
  virtual int32_t block_size() const = 0;
  virtual int32_t num_kv_blocks() const = 0;
  // Whether forward_sample runs: the backend samples on its device and only token ids and logprobs come back.
  virtual bool samples_on_device() const { return false; }
  // Whether a decode step computes a token's attention with the same arithmetic as a prefill chunk does (the CPU
  // backend: one code path). When not (the CUDA kernels), the engine keeps decode-written blocks out of the prefix
  // cache (SchedulerConfig::cache_decoded_blocks), so a prompt's bits do not depend on what the cache held.
  virtual bool decode_matches_prefill() const { return true; }
  // forward(plan) without the logits coming back: logit row i is sampled under batch row i on the device
  // (kernels/sampling_params.h: the tokens cpu::sample would pick from the same logits); token_ids and logprobs
  // (the chosen token's) get one entry per logit row. logprobs may be null: not wanted (the device then skips the
  // sum over the vocabulary that only the logprob needs).
  virtual void forward_sample(const StepPlan& plan, const cpu::SampleBatch& batch, int32_t* token_ids, float* logprobs) {
    (void)plan, (void)batch, (void)token_ids, (void)logprobs;
    fail("this backend does not sample on its device");
  }
  // Empty while the backend can run steps; once it cannot run any more (a GPU whose context a fault corrupted:
  // every later call would fail the same way), why. The engine then stops and its server reports itself down.
  virtual std::string fatal_error() const { return {}; }
  // Set (or clear, with an empty function) the per-layer observer. Slows every step down (a device backend copies
  // each intermediate back); for debugging only. A backend without the hook (a test double) refuses.
  virtual void set_observer(LayerObserver observer) {
    if (observer) fail("this backend does not report its intermediates (no per-layer diff)");
  }
};

}  // namespace flint
