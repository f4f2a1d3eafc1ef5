// The metric types, the registry and the text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/).
#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "common/error.h"

namespace flint::metrics {

namespace {

// atomic<double>::fetch_add is C++20 but not in every standard library we build with.
void atomic_add(std::atomic<double>& a, double v) {
  double old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, old + v, std::memory_order_relaxed)) {
  }
}

bool valid_name(const std::string& s, bool colon) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

const char* type_name(Type type) {
  switch (type) {
    case Type::Counter: return "counter";
    case Type::Gauge: return "gauge";
    case Type::Histogram: return "histogram";
  }
  return "untyped";
}

// name{a="x",b="y"} (or just name), with an extra label last when `extra_name` is set.
void sample_name(std::string& out, const std::string& name, const std::vector<std::string>& label_names,
                 const LabelValues& values, const char* extra_name = nullptr, const std::string& extra_value = {}) {
  out += name;
  if (label_names.empty() && !extra_name) return;
  out += '{';
  for (size_t i = 0; i < label_names.size(); ++i) {
    if (i) out += ',';
    out += label_names[i];
    out += "=\"";
    out += escape_label_value(values[i]);
    out += '"';
  }
  if (extra_name) {
    if (!label_names.empty()) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

void sample_line(std::string& out, double value) {
  out += ' ';
  out += format_value(value);
  out += '\n';
}

void render_child(std::string& out, const std::string& name, const std::vector<std::string>& label_names,
                  const LabelValues& values, const Counter& c) {
  sample_name(out, name, label_names, values);
  sample_line(out, c.value());
}

void render_child(std::string& out, const std::string& name, const std::vector<std::string>& label_names,
                  const LabelValues& values, const Gauge& g) {
  sample_name(out, name, label_names, values);
  sample_line(out, g.value());
}

void render_child(std::string& out, const std::string& name, const std::vector<std::string>& label_names,
                  const LabelValues& values, const Histogram& h) {
  const Histogram::Snapshot s = h.snapshot();
  const std::string bucket = name + "_bucket";
  for (size_t i = 0; i <= s.bounds.size(); ++i) {
    sample_name(out, bucket, label_names, values, "le", i < s.bounds.size() ? format_value(s.bounds[i]) : "+Inf");
    sample_line(out, double(s.cumulative[i]));
  }
  sample_name(out, name + "_sum", label_names, values);
  sample_line(out, s.sum);
  sample_name(out, name + "_count", label_names, values);
  sample_line(out, double(s.count));
}

int64_t whole_seconds(WindowedRate::Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// A counter or gauge read from a callback at each scrape.
class CallbackFamily final : public FamilyBase {
 public:
  CallbackFamily(std::string name, std::string help, Type type, std::function<double()> read)
      : FamilyBase(std::move(name), std::move(help), type, {}), read_(std::move(read)) {}

 private:
  void render_samples(std::string& out) const override {
    out += name_;
    sample_line(out, read_());
  }
  std::function<double()> read_;
};

}  // namespace

void Counter::inc(double v) {
  if (v > 0) atomic_add(value_, v);
}

void Gauge::add(double v) { atomic_add(value_, v); }

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i])) fail("histogram bucket bound ", i, " is not finite (+Inf is always the last bucket)");
    if (i > 0 && !(bounds_[i] > bounds_[i - 1]))
      fail("histogram bucket bounds must increase strictly: ", bounds_[i - 1], " then ", bounds_[i]);
  }
  counts_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) {
  if (std::isnan(v)) return;
  // The first bound >= v: Prometheus buckets are "less than or equal".
  const size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, v);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) s.cumulative[i] = total += counts_[i].load(std::memory_order_relaxed);
  s.count = total;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

WindowedRate::WindowedRate(int window_seconds)
    : window_(window_seconds), slot_second_(size_t(window_seconds) + 1, -1), slot_count_(size_t(window_seconds) + 1, 0.0) {
  if (window_seconds < 1) fail("rate window of ", window_seconds, " s: must be at least 1 s");
}

void WindowedRate::add(double n, Clock::time_point now) {
  const int64_t second = whole_seconds(now);
  const size_t slot = size_t(second % int64_t(slot_second_.size()));
  std::lock_guard lock(mu_);
  if (slot_second_[slot] != second) {  // the slot last held a second that has left the window
    slot_second_[slot] = second;
    slot_count_[slot] = 0.0;
  }
  slot_count_[slot] += n;
}

double WindowedRate::rate(Clock::time_point now) const {
  const int64_t second = whole_seconds(now);
  double total = 0.0;
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < slot_second_.size(); ++i)
    if (slot_second_[i] < second && slot_second_[i] >= second - window_) total += slot_count_[i];
  return total / double(window_);
}

FamilyBase::FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), type_(type), label_names_(std::move(label_names)) {
  if (!valid_name(name_, /*colon=*/true)) fail("metric name \"", name_, "\" is not [a-zA-Z_:][a-zA-Z0-9_:]*");
  for (const std::string& l : label_names_) {
    if (!valid_name(l, /*colon=*/false) || l.starts_with("__"))
      fail("metric ", name_, ": label name \"", l, "\" is not [a-zA-Z_][a-zA-Z0-9_]* or starts with __");
    if (type_ == Type::Histogram && l == "le") fail("metric ", name_, ": \"le\" is the histogram's own label");
    if (std::count(label_names_.begin(), label_names_.end(), l) > 1) fail("metric ", name_, ": label ", l, " twice");
  }
}

void FamilyBase::render(std::string& out) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  out += escape_help(help_);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += type_name(type_);
  out += '\n';
  render_samples(out);
}

template <class Metric>
Metric& Family<Metric>::labels(const LabelValues& values) {
  if (values.size() != label_names_.size())
    fail("metric ", name_, ": ", values.size(), " label values for ", label_names_.size(), " labels");
  std::lock_guard lock(mu_);
  std::unique_ptr<Metric>& child = children_[values];
  if (!child) child = make_();
  return *child;
}

template <class Metric>
void Family<Metric>::render_samples(std::string& out) const {
  std::lock_guard lock(mu_);
  for (const auto& [values, child] : children_) render_child(out, name_, label_names_, values, *child);
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

Family<Counter>& Registry::counter(const std::string& name, const std::string& help,
                                   std::vector<std::string> label_names) {
  auto family = std::make_unique<Family<Counter>>(name, help, Type::Counter, std::move(label_names),
                                                  [] { return std::make_unique<Counter>(); });
  Family<Counter>& ref = *family;
  add(std::move(family));
  return ref;
}

Family<Gauge>& Registry::gauge(const std::string& name, const std::string& help, std::vector<std::string> label_names) {
  auto family = std::make_unique<Family<Gauge>>(name, help, Type::Gauge, std::move(label_names),
                                                [] { return std::make_unique<Gauge>(); });
  Family<Gauge>& ref = *family;
  add(std::move(family));
  return ref;
}

Family<Histogram>& Registry::histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                                       std::vector<std::string> label_names) {
  Histogram check(bounds);  // bad bounds fail here, not at the first labels() call
  auto family = std::make_unique<Family<Histogram>>(name, help, Type::Histogram, std::move(label_names),
                                                    [bounds] { return std::make_unique<Histogram>(bounds); });
  Family<Histogram>& ref = *family;
  add(std::move(family));
  return ref;
}

void Registry::callback(const std::string& name, const std::string& help, Type type, std::function<double()> read) {
  if (type == Type::Histogram) fail("metric ", name, ": a callback gives one value, not a histogram");
  add(std::make_unique<CallbackFamily>(name, help, type, std::move(read)));
}

void Registry::add(std::unique_ptr<FamilyBase> family) {
  // The sample names a family writes: a histogram's three, else its own.
  auto names_of = [](const FamilyBase& f) {
    if (f.type() != Type::Histogram) return std::vector<std::string>{f.name()};
    return std::vector<std::string>{f.name(), f.name() + "_bucket", f.name() + "_sum", f.name() + "_count"};
  };
  std::lock_guard lock(mu_);
  for (const auto& other : families_)
    for (const std::string& a : names_of(*other))
      for (const std::string& b : names_of(*family))
        if (a == b) fail("metric ", family->name(), ": the name ", a, " is taken by metric ", other->name());
  families_.push_back(std::move(family));
}

std::string Registry::render() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& family : families_) family->render(out);
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::string("NaN");
}

std::string escape_label_value(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

}  // namespace flint::metrics
