#include "model/backend_diff.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/error.h"
#include "model/step_plan.h"

namespace flint {

LayerObserver ObserverRecorder::observer() {
  return [this](const std::string& name, const float* data, int64_t rows, int64_t cols) {
    tensors_.push_back({name, rows, cols, std::vector<float>(data, data + rows * cols)});
  };
}

namespace {

DiffRow row_for(const std::string& step, const ObservedTensor& t) {
  DiffRow r;
  r.step = step;
  r.name = t.name;
  r.rows = t.rows;
  r.cols = t.cols;
  return r;
}

DiffRow compare_one(const std::string& step, const ObservedTensor& ref, const ObservedTensor& test, double bound) {
  DiffRow r = row_for(step, ref);
  if (ref.name != test.name) {
    r.problem = "the test backend reports " + test.name + " here";
  } else if (ref.rows != test.rows || ref.cols != test.cols) {
    r.problem = "shape (" + std::to_string(test.rows) + ", " + std::to_string(test.cols) + ") in the test backend";
  } else {
    for (size_t i = 0; i < ref.data.size(); ++i) {
      const double d = std::fabs(double(test.data[i]) - double(ref.data[i]));
      // NaN in either makes the row fail: d is NaN, so record it as infinite.
      r.max_abs = std::max(r.max_abs, std::isnan(d) ? INFINITY : d);
      r.ref_max_abs = std::max(r.ref_max_abs, std::fabs(double(ref.data[i])));
    }
    r.rel = r.ref_max_abs > 0 ? r.max_abs / r.ref_max_abs : (r.max_abs > 0 ? INFINITY : 0.0);
  }
  r.over = !r.problem.empty() || !(r.rel <= bound);
  return r;
}

void add_row(DiffReport& report, DiffRow row) {
  if (row.over && report.first_over < 0) report.first_over = int(report.rows.size());
  report.rows.push_back(std::move(row));
}

int32_t argmax(const float* v, int64_t n) { return int32_t(std::max_element(v, v + n) - v); }

}  // namespace

void compare_observed(const std::string& step, const std::vector<ObservedTensor>& ref,
                      const std::vector<ObservedTensor>& test, double rel_bound, DiffReport& report) {
  const size_t n = std::max(ref.size(), test.size());
  for (size_t i = 0; i < n; ++i) {
    if (i >= ref.size() || i >= test.size()) {
      const ObservedTensor& extra = i < ref.size() ? ref[i] : test[i];
      DiffRow r = row_for(step, extra);
      r.problem = i < ref.size() ? "missing from the test backend" : "reported by the test backend only";
      r.over = true;
      add_row(report, std::move(r));
      continue;
    }
    add_row(report, compare_one(step, ref[i], test[i], rel_bound));
  }
}

DiffReport diff_backends(Backend& ref, Backend& test, const std::vector<int32_t>& prompt, double rel_bound) {
  if (prompt.empty()) fail("diff: the prompt is empty");
  const int32_t vocab = ref.config().vocab_size;
  if (test.config().vocab_size != vocab) fail("diff: the backends' vocabularies differ");
  const int32_t len = int32_t(prompt.size()) + 1;
  for (Backend* b : {&ref, &test}) {
    if (int64_t(b->num_kv_blocks()) * b->block_size() < len)
      fail("diff: a backend's KV cache holds ", int64_t(b->num_kv_blocks()) * b->block_size(), " tokens, the diff needs ", len);
  }
  // Block ids 0.. in each backend's own block size.
  auto blocks = [&](const Backend& b, int32_t kv_len) {
    std::vector<int32_t> ids(size_t((kv_len + b.block_size() - 1) / b.block_size()));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
    return ids;
  };
  DiffReport report;
  std::vector<int32_t> tokens = prompt;
  int32_t kv_len = int32_t(prompt.size());
  for (const char* step : {"prefill", "decode"}) {
    ObserverRecorder ref_rec, test_rec;
    std::vector<float> ref_logits(static_cast<size_t>(vocab)), test_logits(static_cast<size_t>(vocab));
    StepPlan ref_plan, test_plan;
    ref_plan.add_sequence(tokens, kv_len, blocks(ref, kv_len), true);
    test_plan.add_sequence(tokens, kv_len, blocks(test, kv_len), true);
    ref.set_observer(ref_rec.observer());
    test.set_observer(test_rec.observer());
    try {
      ref.forward(ref_plan, ref_logits.data());
      test.forward(test_plan, test_logits.data());
    } catch (...) {
      ref.set_observer({});
      test.set_observer({});
      throw;
    }
    ref.set_observer({});
    test.set_observer({});
    compare_observed(step, ref_rec.tensors(), test_rec.tensors(), rel_bound, report);
    add_row(report, compare_one(step, {"logits", 1, vocab, ref_logits}, {"logits", 1, vocab, test_logits}, rel_bound));
    const int32_t next = argmax(ref_logits.data(), vocab);
    report.top1_total += 1;
    report.top1_agree += next == argmax(test_logits.data(), vocab) ? 1 : 0;
    tokens = {next};
    kv_len += 1;
  }
  return report;
}

std::string format_diff_report(const DiffReport& report, double rel_bound) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-8s %-28s %12s %12s %12s %10s\n", "step", "intermediate", "shape", "max|ref|",
                "max|diff|", "rel");
  out += line;
  for (size_t i = 0; i < report.rows.size(); ++i) {
    const DiffRow& r = report.rows[i];
    const std::string shape = std::to_string(r.rows) + "x" + std::to_string(r.cols);
    const char* mark = int(i) == report.first_over ? "  <-- first over the bound" : r.over ? "  (over)" : "";
    if (!r.problem.empty())
      std::snprintf(line, sizeof line, "%-8s %-28s %12s  MISMATCH: %s%s\n", r.step.c_str(), r.name.c_str(),
                    shape.c_str(), r.problem.c_str(), mark);
    else
      std::snprintf(line, sizeof line, "%-8s %-28s %12s %12.4g %12.4g %10.3g%s\n", r.step.c_str(), r.name.c_str(),
                    shape.c_str(), r.ref_max_abs, r.max_abs, r.rel, mark);
    out += line;
  }
  std::snprintf(line, sizeof line, "top-1 token: %d of %d logit rows agree; bound: rel <= %.4g; %s\n", report.top1_agree,
                report.top1_total, rel_bound,
                report.first_over < 0 ? "PASS: every intermediate within the bound"
                                      : ("FAIL: first over the bound: " + report.rows[size_t(report.first_over)].step +
                                         " " + report.rows[size_t(report.first_over)].name).c_str());
  out += line;
  return out;
}

}  // namespace flint
