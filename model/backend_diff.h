// The per-layer diff: one step (a prompt's prefill, then one decode step) on two backends through their observer
// hooks (model/backend.h), each named intermediate compared in layer order, the first one over the bound flagged.
// flint-run --diff-backends runs it with the CPU backend as the reference and the CUDA backend as the test; its unit
// test runs two CPU backends, one with a perturbed weight.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/backend.h"

namespace flint {

struct ObservedTensor {
  std::string name;
  int64_t rows = 0, cols = 0;
  std::vector<float> data;  // (rows, cols) row-major
};

// Keeps every intermediate a backend reports (install with backend.set_observer(recorder.observer())).
class ObserverRecorder {
 public:
  LayerObserver observer();
  std::vector<ObservedTensor>& tensors() { return tensors_; }

 private:
  std::vector<ObservedTensor> tensors_;
};

// The error measure: max_abs = max |test - ref| over the tensor; rel = max_abs / max |ref| (normwise: elementwise
// relative error is meaningless where ref is near 0). Default bound 2^-4 = 6.25%: the CUDA backend's twin
// (model/twin_backend.h: bf16 weights and activations, fp32 residual) against the fp32 CPU backend on SmolLM2-135M
// reaches 4.5% at its worst intermediate (an attention output: q and k rounded to bf16 move the softmax; layer 18
// of a 7-token prefill) while its logits stay within 0.6%; a wrong layer (a transposed weight, a wrong RoPE, a
// missing bias, a weight scaled by 1.5) gives errors from 10% up to order 1.
constexpr double kDiffDefaultRelBound = 1.0 / 16;

struct DiffRow {
  std::string step;  // "prefill" or "decode"
  std::string name;  // the observer's name, or "logits"
  int64_t rows = 0, cols = 0;
  double max_abs = 0, ref_max_abs = 0, rel = 0;
  bool over = false;
  std::string problem;  // non-empty when the two streams do not line up here (name or shape differs, one missing)
};

struct DiffReport {
  std::vector<DiffRow> rows;
  int first_over = -1;  // index into rows of the first row over the bound (or with a problem), -1 when none
  int32_t top1_agree = 0, top1_total = 0;  // argmax of the logits, per logit row, over both steps
};

// Compares two streams entry by entry (in order); appends to report, updating first_over.
void compare_observed(const std::string& step, const std::vector<ObservedTensor>& ref,
                      const std::vector<ObservedTensor>& test, double rel_bound, DiffReport& report);
// Runs the prefill of `prompt` and one decode step (the reference's argmax token) on both backends, KV blocks
// 0.. of each, and compares the intermediates and the logits. Both need room for prompt.size() + 1 tokens.
DiffReport diff_backends(Backend& ref, Backend& test, const std::vector<int32_t>& prompt, double rel_bound);
// The table: one line per row, the first row over the bound marked, and a closing verdict line.
std::string format_diff_report(const DiffReport& report, double rel_bound);

}  // namespace flint
