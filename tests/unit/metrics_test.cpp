// The metrics registry (common/metrics.h): values under concurrent recording,
// histogram buckets, the text exposition format 0.0.4 byte for byte, name and
// label checks, the windowed rate; and flintd's status labels (server/metrics.h).
#include "common/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "common/error.h"
#include "server/metrics.h"

namespace flint::metrics {
namespace {

TEST(Metrics, CounterAddsFromManyThreadsWithoutLosingAnIncrement) {
  Counter c;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 100000; ++i) c.inc();
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.value(), 400000.0);
  c.inc(2.5);
  c.inc(-7);  // a counter never goes down
  EXPECT_EQ(c.value(), 400002.5);
}

TEST(Metrics, GaugeSetsAndAdds) {
  Gauge g;
  g.set(3);
  g.add(-5.5);
  EXPECT_EQ(g.value(), -2.5);
}

TEST(Metrics, HistogramBucketsAreLessOrEqualAndCumulative) {
  Histogram h({0.1, 1, 10});
  for (double v : {0.05, 0.1, 0.5, 1.0, 1.0001, 10.0, 11.0, -3.0}) h.observe(v);
  h.observe(std::numeric_limits<double>::quiet_NaN());  // ignored
  const Histogram::Snapshot s = h.snapshot();
  // <= 0.1: 0.05, 0.1, -3; <= 1: + 0.5, 1.0; <= 10: + 1.0001, 10; +Inf: + 11.
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{3, 5, 7, 8}));
  EXPECT_EQ(s.count, 8u);
  EXPECT_DOUBLE_EQ(s.sum, 0.05 + 0.1 + 0.5 + 1.0 + 1.0001 + 10.0 + 11.0 - 3.0);
  h.observe(std::chrono::milliseconds(250));
  EXPECT_EQ(h.snapshot().cumulative, (std::vector<uint64_t>{3, 6, 8, 9}));
}

TEST(Metrics, HistogramRejectsBoundsThatDoNotIncreaseOrAreNotFinite) {
  EXPECT_THROW(Histogram({1, 1}), Error);
  EXPECT_THROW(Histogram({2, 1}), Error);
  EXPECT_THROW(Histogram({1, std::numeric_limits<double>::infinity()}), Error);
  EXPECT_THROW(Histogram({std::numeric_limits<double>::quiet_NaN()}), Error);
  Histogram only_inf({});
  only_inf.observe(5);
  EXPECT_EQ(only_inf.snapshot().cumulative, (std::vector<uint64_t>{1}));
}

TEST(Metrics, HistogramCountIsAlwaysItsInfBucketWhileObservedConcurrently) {
  Histogram h({1, 2, 3});
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 0; i < 200000; ++i) h.observe(double(i % 5));
    done = true;
  });
  while (!done) {
    const Histogram::Snapshot s = h.snapshot();
    ASSERT_EQ(s.count, s.cumulative.back());
    for (size_t i = 1; i < s.cumulative.size(); ++i) ASSERT_LE(s.cumulative[i - 1], s.cumulative[i]);
  }
  writer.join();
  const Histogram::Snapshot s = h.snapshot();
  EXPECT_EQ(s.count, 200000u);
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{80000, 120000, 160000, 200000}));  // 0,1 | 2 | 3 | 4
  EXPECT_EQ(s.sum, 400000.0);  // (0+1+2+3+4) * 40000, exact in a double
}

TEST(Metrics, ValuesAreFormattedShortestAndInfinitiesAsPrometheusSpellsThem) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(1), "1");
  EXPECT_EQ(format_value(-2.5), "-2.5");
  EXPECT_EQ(format_value(0.001), "0.001");
  EXPECT_EQ(format_value(0.1 + 0.2), "0.30000000000000004");  // reads back exactly
  EXPECT_EQ(format_value(1e21), "1e+21");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(Metrics, LabelValuesAndHelpAreEscaped) {
  EXPECT_EQ(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(escape_help("a\\b\"c\nd"), "a\\\\b\"c\\nd");  // quotes stay in HELP
}

TEST(Metrics, RegistryRendersTheTextFormatExactly) {
  Registry r;
  auto& requests = r.counter("app_requests_total", "Requests by API.\nSecond line \\ here.", {"api", "status"});
  requests.labels({"http", "5xx"}).inc(2);
  requests.labels({"grpc", "ok"}).inc();
  requests.labels({"grpc", "say \"hi\"\n"}).inc();
  r.gauge("app_level", "A level.").get().set(-1.5);
  auto& latency = r.histogram("app_latency_seconds", "Latency.", {0.5, 1}, {"api"});
  latency.labels({"grpc"}).observe(0.25);
  latency.labels({"grpc"}).observe(0.75);
  latency.labels({"grpc"}).observe(3);
  r.histogram("app_size", "Sizes.", {10}).get().observe(10);
  r.callback("app_queue_depth", "Waiting.", Type::Gauge, [] { return 7.0; });
  r.counter("app_unused_total", "Never touched, labelled.", {"x"});
  EXPECT_EQ(r.render(),
            "# HELP app_requests_total Requests by API.\\nSecond line \\\\ here.\n"
            "# TYPE app_requests_total counter\n"
            "app_requests_total{api=\"grpc\",status=\"ok\"} 1\n"
            "app_requests_total{api=\"grpc\",status=\"say \\\"hi\\\"\\n\"} 1\n"
            "app_requests_total{api=\"http\",status=\"5xx\"} 2\n"
            "# HELP app_level A level.\n"
            "# TYPE app_level gauge\n"
            "app_level -1.5\n"
            "# HELP app_latency_seconds Latency.\n"
            "# TYPE app_latency_seconds histogram\n"
            "app_latency_seconds_bucket{api=\"grpc\",le=\"0.5\"} 1\n"
            "app_latency_seconds_bucket{api=\"grpc\",le=\"1\"} 2\n"
            "app_latency_seconds_bucket{api=\"grpc\",le=\"+Inf\"} 3\n"
            "app_latency_seconds_sum{api=\"grpc\"} 4\n"
            "app_latency_seconds_count{api=\"grpc\"} 3\n"
            "# HELP app_size Sizes.\n"
            "# TYPE app_size histogram\n"
            "app_size_bucket{le=\"10\"} 1\n"
            "app_size_bucket{le=\"+Inf\"} 1\n"
            "app_size_sum 10\n"
            "app_size_count 1\n"
            "# HELP app_queue_depth Waiting.\n"
            "# TYPE app_queue_depth gauge\n"
            "app_queue_depth 7\n"
            "# HELP app_unused_total Never touched, labelled.\n"
            "# TYPE app_unused_total counter\n");
}

TEST(Metrics, AChildKeepsItsAddressAndValueWhenOthersAreAdded) {
  Registry r;
  auto& family = r.counter("c_total", "C.", {"k"});
  Counter& first = family.labels({"a"});
  first.inc(3);
  for (int i = 0; i < 1000; ++i) family.labels({std::to_string(i)});
  EXPECT_EQ(&family.labels({"a"}), &first);
  EXPECT_EQ(first.value(), 3.0);
}

TEST(Metrics, RegistryRejectsBadNamesDuplicatesAndWrongLabelCounts) {
  Registry r;
  EXPECT_THROW(r.counter("", "x"), Error);
  EXPECT_THROW(r.counter("1abc", "x"), Error);
  EXPECT_THROW(r.counter("a-b", "x"), Error);
  EXPECT_THROW(r.gauge("ok_name", "x", {"bad-label"}), Error);
  EXPECT_THROW(r.gauge("ok_name", "x", {"__reserved"}), Error);
  EXPECT_THROW(r.gauge("ok_name", "x", {"a", "a"}), Error);
  EXPECT_THROW(r.histogram("h", "x", {1}, {"le"}), Error);
  EXPECT_THROW(r.histogram("h", "x", {2, 1}), Error);
  EXPECT_THROW(r.callback("h", "x", Type::Histogram, [] { return 0.0; }), Error);
  r.counter("ns:taken", "x");  // colons are allowed in metric names
  EXPECT_THROW(r.gauge("ns:taken", "x"), Error);
  r.histogram("lat", "x", {1});
  EXPECT_THROW(r.counter("lat_count", "x"), Error);  // the histogram writes lat_count
  r.counter("size_sum", "x");
  EXPECT_THROW(r.histogram("size", "x", {1}), Error);  // it would write size_sum
  auto& labelled = r.counter("two_total", "x", {"a", "b"});
  EXPECT_THROW(labelled.labels({"only one"}), Error);
  EXPECT_THROW(labelled.get(), Error);
  // Nothing half-registered: the failed names stay free of samples.
  EXPECT_EQ(r.render().find("ok_name"), std::string::npos);
}

TEST(Metrics, WindowedRateAveragesTheLastWholeSeconds) {
  using Clock = WindowedRate::Clock;
  const Clock::time_point t0 = Clock::time_point(std::chrono::seconds(1000));
  WindowedRate rate(10);
  EXPECT_EQ(rate.rate(t0), 0.0);
  rate.add(30, t0);                                  // second 1000
  rate.add(20, t0 + std::chrono::milliseconds(999));  // still 1000
  rate.add(50, t0 + std::chrono::seconds(5));         // 1005
  EXPECT_EQ(rate.rate(t0 + std::chrono::milliseconds(500)), 0.0);  // second 1000 is not over yet
  EXPECT_EQ(rate.rate(t0 + std::chrono::seconds(1)), 5.0);         // 50 in [990, 1000]
  EXPECT_EQ(rate.rate(t0 + std::chrono::seconds(6)), 10.0);        // 100
  EXPECT_EQ(rate.rate(t0 + std::chrono::seconds(10)), 10.0);       // [1000, 1009]
  EXPECT_EQ(rate.rate(t0 + std::chrono::seconds(11)), 5.0);        // [1001, 1010]: 1000 left
  EXPECT_EQ(rate.rate(t0 + std::chrono::seconds(16)), 0.0);
  // A slot reused 11 s later starts from zero.
  rate.add(7, t0 + std::chrono::seconds(11));
  EXPECT_EQ(rate.rate(t0 + std::chrono::seconds(12)), (50.0 + 7.0) / 10);
  EXPECT_THROW(WindowedRate(0), Error);
}

}  // namespace
}  // namespace flint::metrics

namespace flint::server {
namespace {

TEST(ServerMetrics, StatusLabelsAreLowerCaseGrpcNamesOrHttpClasses) {
  EXPECT_EQ(grpc_status_label(grpc::StatusCode::OK), "ok");
  EXPECT_EQ(grpc_status_label(grpc::StatusCode::CANCELLED), "cancelled");
  EXPECT_EQ(grpc_status_label(grpc::StatusCode::DEADLINE_EXCEEDED), "deadline_exceeded");
  EXPECT_EQ(grpc_status_label(grpc::StatusCode::RESOURCE_EXHAUSTED), "resource_exhausted");
  EXPECT_EQ(grpc_status_label(grpc::StatusCode::UNAUTHENTICATED), "unauthenticated");
  EXPECT_EQ(http_status_label(200), "ok");
  EXPECT_EQ(http_status_label(400), "4xx");
  EXPECT_EQ(http_status_label(429), "4xx");
  EXPECT_EQ(http_status_label(503), "5xx");
}

TEST(ServerMetrics, RequestsAreCountedByApiAndStatusAndOkSeriesExistFromTheStart) {
  metrics::Registry r;
  RequestMetrics requests(r);
  EXPECT_NE(r.render().find("flint_requests_total{api=\"grpc\",status=\"ok\"} 0\n"), std::string::npos);
  EXPECT_NE(r.render().find("flint_requests_total{api=\"http\",status=\"ok\"} 0\n"), std::string::npos);
  requests.count(Api::Grpc, "cancelled");
  requests.count(Api::Grpc, "cancelled");
  requests.count(Api::Http, "4xx");
  const std::string text = r.render();
  EXPECT_NE(text.find("flint_requests_total{api=\"grpc\",status=\"cancelled\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("flint_requests_total{api=\"http\",status=\"4xx\"} 1\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace flint::server
