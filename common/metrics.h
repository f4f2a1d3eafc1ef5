// Prometheus metrics, written here rather than pulled in: counters, gauges and
// histograms with fixed buckets, in families that share a name, help text and
// label names, rendered in the text exposition format 0.0.4.
//
// Threads: recording (Counter::inc, Gauge::set, Histogram::observe) is a few
// relaxed atomic operations, no lock and no allocation, from any thread. Creating
// a family or a labelled child and rendering take locks; a child's address is
// stable for the registry's lifetime, so a hot path looks it up once and keeps it.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace flint::metrics {

enum class Type { Counter, Gauge, Histogram };

// A value that only goes up (a count of things or of seconds).
class Counter {
 public:
  // PRECOND: v >= 0 (a counter never decreases; a negative v is ignored).
  void inc(double v = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down (a level, a size, a 0/1 flag).
class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double v);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into fixed buckets: bucket i holds v <= bounds[i] (and
// above bounds[i-1]), a last one the rest (le="+Inf"); plus their sum.
class Histogram {
 public:
  // `bounds` strictly increasing and finite (throws flint::Error otherwise); may be empty.
  explicit Histogram(std::vector<double> bounds);
  // NaN is ignored: it would poison the sum and belongs to no bucket.
  void observe(double v);
  void observe(std::chrono::steady_clock::duration d) { observe(std::chrono::duration<double>(d).count()); }

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // bounds.size() + 1 entries, the last is +Inf == count
    double sum = 0.0;
    uint64_t count = 0;
  };
  // Counts read one bucket at a time: a concurrent observe may show in the sum
  // and not yet in a bucket, but count is always the +Inf bucket.
  Snapshot snapshot() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1, not cumulative
  std::atomic<double> sum_{0.0};
};

// Events per second over a sliding window of whole seconds, for a rate gauge
// (tokens per second) that needs no scraper to take differences. add() takes a
// mutex: call it once per batch of events (an engine step), not per event.
class WindowedRate {
 public:
  using Clock = std::chrono::steady_clock;
  explicit WindowedRate(int window_seconds = 10);
  void add(double n, Clock::time_point now = Clock::now());
  // Events in the last `window_seconds` whole seconds before the current one,
  // divided by window_seconds (so it lags by under a second).
  double rate(Clock::time_point now = Clock::now()) const;

 private:
  const int window_;
  mutable std::mutex mu_;
  std::vector<int64_t> slot_second_;  // which second each slot holds; slot = second % (window + 1)
  std::vector<double> slot_count_;
};

// A family's children by label values, in label-name order.
using LabelValues = std::vector<std::string>;

class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> label_names);
  virtual ~FamilyBase() = default;
  const std::string& name() const { return name_; }
  Type type() const { return type_; }
  // HELP and TYPE lines, then one line per sample (several for a histogram).
  void render(std::string& out) const;

 protected:
  virtual void render_samples(std::string& out) const = 0;
  std::string name_, help_;
  Type type_;
  std::vector<std::string> label_names_;
};

template <class Metric>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, Type type, std::vector<std::string> label_names,
         std::function<std::unique_ptr<Metric>()> make)
      : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)), make_(std::move(make)) {}

  // The child with these label values (one per label name, else flint::Error),
  // created at 0 on first use. Takes the family's lock: look it up once, keep the reference.
  Metric& labels(const LabelValues& values);
  // The only child of a family without labels.
  Metric& get() { return labels({}); }

 private:
  void render_samples(std::string& out) const override;
  std::function<std::unique_ptr<Metric>()> make_;
  mutable std::mutex mu_;
  std::map<LabelValues, std::unique_ptr<Metric>> children_;
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;

class Registry {
 public:
  // Families are rendered in the order they were added. Names must match
  // [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* without a
  // leading "__" (and "le" is a histogram's own); a name used twice, or a
  // histogram named *_bucket/_sum/_count twice over, throws flint::Error.
  Family<Counter>& counter(const std::string& name, const std::string& help, std::vector<std::string> label_names = {});
  Family<Gauge>& gauge(const std::string& name, const std::string& help, std::vector<std::string> label_names = {});
  Family<Histogram>& histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                               std::vector<std::string> label_names = {});
  // A counter or gauge without labels whose value `read` gives at each scrape,
  // for a number some other part keeps (the engine's stats). `read` runs under
  // the registry's lock: it must be quick and must not call into the registry.
  void callback(const std::string& name, const std::string& help, Type type, std::function<double()> read);

  // The text exposition format 0.0.4 (Content-Type: text/plain; version=0.0.4).
  std::string render() const;

 private:
  void add(std::unique_ptr<FamilyBase> family);
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_;
};

// Exposition-format pieces, exposed for tests.
// A sample value: "+Inf", "-Inf", "NaN", else the shortest text that reads back exactly.
std::string format_value(double v);
// A label value inside its quotes: backslash, double quote and newline escaped.
std::string escape_label_value(const std::string& v);
// HELP text: backslash and newline escaped.
std::string escape_help(const std::string& v);

}  // namespace flint::metrics
