#include "metrics/exposition.h"

#include <memory>
#include <regex>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>

namespace ondemand::metrics {
namespace {

constexpr proto::MetricSpec COUNTER{proto::MetricId::REQUESTS, "t_requests_total", proto::MetricType::COUNTER,
                                    "type,result", "Requests.\nSecond line with a \\ backslash."};
constexpr proto::MetricSpec GAUGE{proto::MetricId::INFLIGHT, "t_gauge", proto::MetricType::GAUGE, "", "A gauge."};
constexpr proto::MetricSpec HISTOGRAM{proto::MetricId::READ_LATENCY, "t_latency_seconds",
                                      proto::MetricType::HISTOGRAM, "", "Latency."};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The value of the first sample line that starts with `series` + ' '.
std::string value_of(const std::string& text, const std::string& series) {
  for (const auto& line : lines_of(text))
    if (line.rfind(series + " ", 0) == 0) return line.substr(series.size() + 1);
  return "(absent)";
}

std::unique_ptr<proto::SharedState> zeroed_state() {
  auto s = std::make_unique<proto::SharedState>();
  s->magic = proto::SHM_MAGIC;
  s->version = proto::SHM_VERSION;
  s->size = sizeof(proto::SharedState);
  return s;
}

}  // namespace

TEST_CASE("label values and help text are escaped as the text format requires", "[metrics]") {
  CHECK(escape_label_value(R"(a\b"c)" "\n" "d") == R"(a\\b\"c\nd)");
  CHECK(escape_label_value("plain") == "plain");
  CHECK(escape_help("x\\y\n\"z\"") == R"(x\\y\n"z")");  // quotes stay in HELP
}

TEST_CASE("values: integers exact, infinities and NaN spelled as Prometheus reads them", "[metrics]") {
  CHECK(format_value(std::uint64_t{18446744073709551615ULL}) == "18446744073709551615");
  CHECK(format_value(0.0) == "0");
  CHECK(format_value(3.0) == "3");
  CHECK(format_value(0.00025) == "0.00025");
  CHECK(format_value(2.5) == "2.5");
  CHECK(format_value(1.0 / 0.0) == "+Inf");
  CHECK(format_value(-1.0 / 0.0) == "-Inf");
  CHECK(format_value(0.0 / 0.0) == "NaN");
}

TEST_CASE("a family is HELP and TYPE, then samples with the table's label names", "[metrics]") {
  TextWriter out;
  out.family(COUNTER);
  out.sample({"open", "ok"}, std::uint64_t{7});
  out.sample({"read", "we\"ird"}, std::uint64_t{1});
  out.family(GAUGE);
  out.sample({}, 1.5);
  CHECK(out.error().empty());
  CHECK(out.text() ==
        "# HELP t_requests_total Requests.\\nSecond line with a \\\\ backslash.\n"
        "# TYPE t_requests_total counter\n"
        "t_requests_total{type=\"open\",result=\"ok\"} 7\n"
        "t_requests_total{type=\"read\",result=\"we\\\"ird\"} 1\n"
        "# HELP t_gauge A gauge.\n"
        "# TYPE t_gauge gauge\n"
        "t_gauge 1.5\n");
}

TEST_CASE("a sample whose label count does not match its family is dropped and reported", "[metrics]") {
  TextWriter out;
  out.family(COUNTER);
  out.sample({"open"}, std::uint64_t{1});
  CHECK_THAT(out.error(), Catch::Contains("t_requests_total") && Catch::Contains("1 label values for 2"));
  CHECK(out.text().find("t_requests_total{") == std::string::npos);
}

TEST_CASE("histograms: cumulative buckets ending in +Inf, sum in seconds, count = +Inf bucket", "[metrics]") {
  TextWriter out;
  out.family(HISTOGRAM);
  const std::array<std::uint64_t, 3> bounds{250'000, 1'000'000'000, 2'500'000'000};
  const std::array<std::uint64_t, 4> buckets{2, 0, 3, 1};  // non-cumulative, last is +Inf
  out.histogram(bounds, buckets, 4'500'000'000);
  CHECK(out.error().empty());
  CHECK(out.text() ==
        "# HELP t_latency_seconds Latency.\n"
        "# TYPE t_latency_seconds histogram\n"
        "t_latency_seconds_bucket{le=\"0.00025\"} 2\n"
        "t_latency_seconds_bucket{le=\"1\"} 2\n"
        "t_latency_seconds_bucket{le=\"2.5\"} 5\n"
        "t_latency_seconds_bucket{le=\"+Inf\"} 6\n"
        "t_latency_seconds_sum 4.5\n"
        "t_latency_seconds_count 6\n");
}

TEST_CASE("bucket_index: the first bound >= the value, else +Inf", "[metrics]") {
  const std::array<std::uint64_t, 3> bounds{10, 20, 30};
  CHECK(proto::bucket_index(bounds, 0) == 0);
  CHECK(proto::bucket_index(bounds, 10) == 0);  // le is inclusive
  CHECK(proto::bucket_index(bounds, 11) == 1);
  CHECK(proto::bucket_index(bounds, 30) == 2);
  CHECK(proto::bucket_index(bounds, 31) == 3);
}

TEST_CASE("HistogramCounters::observe fills one bucket and the sum", "[metrics]") {
  auto s = zeroed_state();
  auto& h = s->worker_metrics.read_latency;
  h.observe(proto::READ_LATENCY_BOUNDS_NS, 300'000);         // (250 us, 500 us]
  h.observe(proto::READ_LATENCY_BOUNDS_NS, 60'000'000'000);  // above every bound
  CHECK(h.buckets[2].load() == 1);
  CHECK(h.buckets.back().load() == 1);
  CHECK(h.sum_ns.load() == 60'000'300'000);
}

TEST_CASE("the metric table follows Prometheus naming and has unique names", "[metrics]") {
  const std::regex name_re("[a-zA-Z_:][a-zA-Z0-9_:]*");
  const std::regex label_re("[a-zA-Z_][a-zA-Z0-9_]*");
  std::set<std::string_view> names;
  for (const auto& spec : proto::METRICS) {
    INFO(spec.name);
    const std::string name(spec.name);
    CHECK(std::regex_match(name, name_re));
    CHECK(name.rfind("ondemand_", 0) == 0);
    CHECK(names.insert(spec.name).second);
    CHECK(!spec.help.empty());
    const bool total = name.size() > 6 && name.ends_with("_total");
    CHECK(total == (spec.type == proto::MetricType::COUNTER));
    if (spec.type == proto::MetricType::HISTOGRAM) CHECK(name.ends_with("_seconds"));
    std::string labels(spec.labels);
    for (std::size_t pos = 0; !labels.empty();) {
      const auto comma = labels.find(',', pos);
      const auto label = labels.substr(pos, comma - pos);
      CHECK(std::regex_match(label, label_re));
      CHECK(label != "le");
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
}

TEST_CASE("render writes every table entry, in order, from the shared state", "[metrics]") {
  auto s = zeroed_state();
  s->worker_pid = 4242;
  s->generation = 7;
  s->worker_state = static_cast<std::uint64_t>(proto::WorkerState::PARKED);
  s->hangs_detected = 2;
  s->counters.open_refused = 3;
  s->counters.read_failed = 4;
  s->counters.closes = 5;
  s->counters.bytes_written = 1 << 20;
  s->counters.unknown_object = 6;
  s->counters.restores = 8;
  s->worker_metrics.opens_ok = 9;
  s->worker_metrics.reads_ok = 10;
  s->worker_metrics.backend_errors[static_cast<std::size_t>(proto::BackendErrorKind::NOT_FOUND)] = 11;
  s->worker_metrics.open_objects = 12;
  s->supervisor_metrics.restarts[static_cast<std::size_t>(proto::RestartCause::KILLED)] = 13;
  s->supervisor_metrics.failover_recovery.observe(proto::RECOVERY_BOUNDS_NS, 8'000'000);
  s->supervisor_metrics.failover_recovery.observe(proto::RECOVERY_BOUNDS_NS, 90'000'000);

  std::string error = "unset";
  const auto text = render(*s, {"1.2.3-test", 1700000000.5}, &error);
  CHECK(error == "");
  // Every family, in table order, each with HELP then TYPE.
  std::size_t at = 0;
  for (const auto& spec : proto::METRICS) {
    INFO(spec.name);
    const auto help = text.find("# HELP " + std::string(spec.name) + " ", at);
    REQUIRE(help != std::string::npos);
    const auto type = text.find("# TYPE " + std::string(spec.name) + " ", help);
    REQUIRE(type != std::string::npos);
    at = type;
  }
  CHECK(value_of(text, "ondemand_build_info{version=\"1.2.3-test\"}") == "1");
  CHECK(value_of(text, "ondemand_supervisor_start_time_seconds") == "1700000000.5");
  CHECK(value_of(text, "ondemand_requests_total{type=\"open\",result=\"ok\"}") == "9");
  CHECK(value_of(text, "ondemand_requests_total{type=\"open\",result=\"error\"}") == "3");
  CHECK(value_of(text, "ondemand_requests_total{type=\"read\",result=\"ok\"}") == "10");
  CHECK(value_of(text, "ondemand_requests_total{type=\"read\",result=\"error\"}") == "4");
  CHECK(value_of(text, "ondemand_requests_total{type=\"close\",result=\"ok\"}") == "5");
  CHECK(value_of(text, "ondemand_served_bytes_total") == "1048576");
  CHECK(value_of(text, "ondemand_backend_errors_total{kind=\"not_found\"}") == "11");
  CHECK(value_of(text, "ondemand_backend_errors_total{kind=\"read\"}") == "0");
  CHECK(value_of(text, "ondemand_protocol_errors_total{kind=\"unknown_object\"}") == "6");
  CHECK(value_of(text, "ondemand_restores_total{reason=\"worker_start\"}") == "8");
  CHECK(value_of(text, "ondemand_open_objects") == "12");
  CHECK(value_of(text, "ondemand_worker_pid") == "4242");
  CHECK(value_of(text, "ondemand_worker_generation") == "7");
  CHECK(value_of(text, "ondemand_worker_state{state=\"parked\"}") == "1");
  CHECK(value_of(text, "ondemand_worker_state{state=\"running\"}") == "0");
  CHECK(value_of(text, "ondemand_worker_parked") == "1");
  CHECK(value_of(text, "ondemand_worker_restarts_total{cause=\"killed\"}") == "13");
  CHECK(value_of(text, "ondemand_worker_restarts_total{cause=\"crash\"}") == "0");
  CHECK(value_of(text, "ondemand_hangs_detected_total") == "2");
  CHECK(value_of(text, "ondemand_failover_recovery_seconds_bucket{le=\"0.005\"}") == "0");
  CHECK(value_of(text, "ondemand_failover_recovery_seconds_bucket{le=\"0.01\"}") == "1");
  CHECK(value_of(text, "ondemand_failover_recovery_seconds_bucket{le=\"0.1\"}") == "2");
  CHECK(value_of(text, "ondemand_failover_recovery_seconds_bucket{le=\"+Inf\"}") == "2");
  CHECK(value_of(text, "ondemand_failover_recovery_seconds_count") == "2");
  CHECK(value_of(text, "ondemand_failover_recovery_seconds_sum") == "0.098");
  CHECK(value_of(text, "ondemand_read_latency_seconds_count") == "0");
  CHECK(value_of(text, "ondemand_upgrade_stall_seconds_bucket{le=\"60\"}") == "0");
  // Nothing but comments and samples; the text ends with a newline.
  for (const auto& line : lines_of(text)) {
    INFO(line);
    CHECK(!line.empty());
  }
  CHECK(text.back() == '\n');
}

}  // namespace ondemand::metrics
