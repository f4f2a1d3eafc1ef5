"""flintd end-to-end: the Prometheus endpoint (--metrics-port 0), scraped and parsed here
with a small parser of the text exposition format 0.0.4 (the venv has no prometheus_client).

One flintd with --max-running-seqs 1, so a second request waits and shows in
flint_queue_depth. Every check compares two scrapes around the requests it makes:
counts of requests by API and status (ok, a failing and a cancelled request on gRPC
and on HTTP), histogram counts against the number of requests and tokens, token
counters against the usage the server reported, KV blocks while a request runs and
once idle, the prefix cache on a repeated prompt.
"""
import http.client
import json
import math
import re
import socket
import time
import urllib.parse
import urllib.request

import grpc
import pytest

from flintd_harness import HTTP_FLAGS, Flintd, assert_ok, chat, gen, pb, read_stream, wait_for_idle_stats

pytestmark = pytest.mark.skipif(not HTTP_FLAGS, reason="this flintd has no HTTP API (no --http-port flag)")

# ------------------------------------------------------------------ the text format

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def _unescape(value):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}.get(m.group(1), "\\" + m.group(1)), value)


def _parse_labels(text, line):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        assert m, f"bad labels at {text[pos:]!r} in {line!r}"
        assert m.group(1) not in labels, f"label {m.group(1)} twice in {line!r}"
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", f"expected ',' at {text[pos:]!r} in {line!r}"
            pos += 1
    return labels


class Scrape:
    """One /metrics body parsed and checked: HELP/TYPE before a family's samples, no
    sample twice, histogram series complete and consistent."""

    def __init__(self, text):
        self.text = text
        self.types, self.helps = {}, {}
        self.samples = {}  # (name, frozenset(labels)) -> value
        family = None
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    assert METRIC_NAME.fullmatch(parts[2]), line
                    if parts[1] == "TYPE":
                        assert parts[3] in TYPES, line
                        assert parts[2] not in self.types, f"TYPE of {parts[2]} twice"
                        self.types[parts[2]] = parts[3]
                        family = parts[2]
                    else:
                        self.helps[parts[2]] = _unescape(parts[3]) if len(parts) > 3 else ""
                continue
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
            assert m, f"not a sample line: {line!r}"
            name, labels = m.group(1), _parse_labels(m.group(2) or "", line)
            assert re.fullmatch(r"[+-]?(Inf|NaN|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)", m.group(3)), f"bad value: {line!r}"
            value = float(m.group(3))
            base = name
            if self.types.get(family) == "histogram":
                base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base == family, f"sample {name} outside its family (last TYPE: {family})"
            key = (name, frozenset(labels.items()))
            assert key not in self.samples, f"sample twice: {line!r}"
            self.samples[key] = value
        for name, kind in self.types.items():
            assert name in self.helps, f"{name}: no HELP"
            if kind == "histogram":
                for labels in self._series(name + "_count"):
                    self.histogram(name, **labels)  # checks it

    def _series(self, name):
        return [dict(labels) for (n, labels) in self.samples if n == name]

    def value(self, name, **labels):
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels}; have {sorted(self._series(name), key=str)}"
        return self.samples[key]

    def get(self, name, default=0.0, **labels):
        return self.samples.get((name, frozenset(labels.items())), default)

    def histogram(self, name, **labels):
        """(buckets as [(le, cumulative count)], sum, count), after checking the series."""
        assert self.types.get(name) == "histogram", f"{name} is not a histogram"
        buckets = sorted((float(dict(key)["le"]), value) for (n, key), value in self.samples.items()
                         if n == name + "_bucket" and {k: v for k, v in key if k != "le"} == labels)
        assert buckets and buckets[-1][0] == math.inf, f"{name}{labels}: no +Inf bucket"
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), f"{name}{labels}: buckets not monotone: {buckets}"
        count, total = self.value(name + "_count", **labels), self.value(name + "_sum", **labels)
        assert counts[-1] == count, f"{name}{labels}: +Inf bucket {counts[-1]} != count {count}"
        assert total >= 0 and (count > 0 or total == 0), f"{name}{labels}: sum {total} for count {count}"
        return buckets, total, count


def scrape(server):
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        assert response.status == 200
        content_type = response.headers["Content-Type"]
        assert content_type.startswith("text/plain") and "version=0.0.4" in content_type, content_type
        return Scrape(response.read().decode())


def wait_for(server, predicate, what, timeout=20.0):
    """Scrapes until predicate(scrape) holds; returns that scrape."""
    end = time.monotonic() + timeout
    while True:
        s = scrape(server)
        if predicate(s):
            return s
        assert time.monotonic() < end, f"{what}: not within {timeout} s; last scrape:\n{s.text}"
        time.sleep(0.05)


def test_the_parser_reads_what_the_format_allows_and_refuses_what_it_does_not():
    s = Scrape('# HELP a_total Help with \\\\ and \\n.\n# TYPE a_total counter\n'
               'a_total{x="q\\"uote",y="back\\\\slash\\nnl"} 3\n'
               '# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 5.5\nh_count 2\n')
    assert s.value("a_total", x='q"uote', y="back\\slash\nnl") == 3
    assert s.helps["a_total"] == "Help with \\ and \n."
    assert s.histogram("h") == ([(1.0, 1), (math.inf, 2)], 5.5, 2)
    for bad in ('# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 3\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 2\n',
                '# HELP h H.\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n',
                "# HELP g G.\n# TYPE g gauge\nother 1\n",
                "# HELP g G.\n# TYPE g gauge\ng 1\ng 2\n",
                '# HELP g G.\n# TYPE g gauge\ng{a="1" b="2"} 1\n',
                "# HELP g G.\n# TYPE g gauge\ng one\n"):
        with pytest.raises(AssertionError):
            Scrape(bad)


# ------------------------------------------------------------------ flintd

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = Flintd(tmp_path_factory.mktemp("flintd-metrics"), "--metrics-port", "0", "--max-running-seqs", "1",
               "--max-queue", "8", "--kv-cache-memory", "64MiB")
    yield d
    d.close()


@pytest.fixture(scope="module")
def info(server):
    return server.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)


def http_json(server, path, body, timeout=60):
    url = urllib.parse.urlsplit(server.http_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body if isinstance(body, bytes) else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def requests_of(s, api, status):
    return s.get("flint_requests_total", api=api, status=status)


def delta(after, before, name, **labels):
    return after.get(name, **labels) - before.get(name, **labels)


def hist_delta(after, before, name):
    return after.histogram(name)[2] - before.histogram(name)[2]


def idle(server):
    stats = wait_for_idle_stats(server.stub, timeout=30)
    assert stats.num_running == 0 and stats.num_waiting == 0 and stats.num_active_streams == 0, stats
    return stats


def test_metrics_line_and_a_scrape_when_idle(server, info):
    assert server.metrics_url, f"no 'flintd: metrics on' line:\n{server.log_tail()}"
    s = scrape(server)
    for name, kind in {"flint_requests_total": "counter", "flint_queue_depth": "gauge",
                       "flint_running_sequences": "gauge", "flint_kv_blocks_used": "gauge",
                       "flint_kv_blocks_free": "gauge", "flint_kv_blocks_cached": "gauge",
                       "flint_prefix_cache_query_tokens_total": "counter",
                       "flint_prefix_cache_hit_tokens_total": "counter", "flint_prefix_cache_hit_ratio": "gauge",
                       "flint_time_to_first_token_seconds": "histogram",
                       "flint_inter_token_latency_seconds": "histogram",
                       "flint_request_duration_seconds": "histogram", "flint_request_queue_seconds": "histogram",
                       "flint_prompt_tokens_total": "counter", "flint_generation_tokens_total": "counter",
                       "flint_generation_tokens_per_second": "gauge", "flint_engine_steps_total": "counter",
                       "flint_preemptions_total": "counter", "flint_build_info": "gauge",
                       "flint_model_info": "gauge"}.items():
        assert s.types.get(name) == kind, f"{name}: type {s.types.get(name)}, expected {kind}"
    assert s.value("flint_queue_depth") == 0
    assert s.value("flint_running_sequences") == 0
    assert s.value("flint_kv_blocks_used") == 0
    assert s.value("flint_kv_blocks_free") == info.num_kv_blocks
    assert requests_of(s, "grpc", "ok") == 0 and requests_of(s, "http", "ok") == 0  # present before any request
    assert s.value("flint_build_info", version=info.server_version, compiler=s._series("flint_build_info")[0]["compiler"]) == 1
    assert s.value("flint_model_info", model=info.name, architecture=info.architecture, weight_type=info.weight_type,
                   device=info.device, chat_template=info.chat_template) == 1


def test_successful_requests_are_counted_with_their_tokens_and_latencies(server, info):
    idle(server)
    before = scrape(server)
    results = [server.stub.Generate(gen("The capital of France is", max_tokens=6, ignore_eos=True), timeout=120),
               server.stub.Chat(chat("Say hello.", max_tokens=5, ignore_eos=True), timeout=120)]
    results = [read_stream(r) for r in results]
    for r in results:
        assert_ok(r, "gRPC")
    usages = [(r.finished.usage.prompt_tokens, r.finished.usage.completion_tokens) for r in results]
    status, body = http_json(server, "/v1/chat/completions",
                             {"model": info.name, "messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 4,
                              "ignore_eos": True})
    assert status == 200, body
    usage = json.loads(body)["usage"]
    usages.append((usage["prompt_tokens"], usage["completion_tokens"]))
    # A streamed completion: usage comes in its last chunk when asked for.
    status, body = http_json(server, "/v1/completions",
                             {"model": info.name, "prompt": "One, two, three,", "max_tokens": 3, "stream": True,
                              "stream_options": {"include_usage": True}, "ignore_eos": True})
    assert status == 200, body
    chunks = [json.loads(line[6:]) for line in body.decode().splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    usage = [c["usage"] for c in chunks if c.get("usage")][-1]
    usages.append((usage["prompt_tokens"], usage["completion_tokens"]))
    idle(server)
    after = scrape(server)

    n = len(usages)
    prompt, completion = sum(p for p, _ in usages), sum(c for _, c in usages)
    assert delta(after, before, "flint_requests_total", api="grpc", status="ok") == 2
    assert delta(after, before, "flint_requests_total", api="http", status="ok") == 2
    assert delta(after, before, "flint_prompt_tokens_total") == prompt
    assert delta(after, before, "flint_generation_tokens_total") == completion
    assert hist_delta(after, before, "flint_time_to_first_token_seconds") == n
    assert hist_delta(after, before, "flint_request_duration_seconds") == n
    assert hist_delta(after, before, "flint_request_queue_seconds") == n
    assert hist_delta(after, before, "flint_inter_token_latency_seconds") == completion - n
    # One sequence at a time and a cache of many blocks: each prompt looked up once.
    assert delta(after, before, "flint_prefix_cache_query_tokens_total") == prompt
    # Each request's latency covers its first token and its inter-token gaps.
    ttft_sum = after.histogram("flint_time_to_first_token_seconds")[1] - before.histogram("flint_time_to_first_token_seconds")[1]
    duration_sum = after.histogram("flint_request_duration_seconds")[1] - before.histogram("flint_request_duration_seconds")[1]
    assert 0 < ttft_sum <= duration_sum
    assert delta(after, before, "flint_engine_steps_total") >= completion
    assert after.value("flint_kv_blocks_used") == 0
    assert after.value("flint_kv_blocks_used") + after.value("flint_kv_blocks_free") == info.num_kv_blocks
    # The tokens just generated are in the 10-second rate window once their second is over.
    wait_for(server, lambda s: s.value("flint_generation_tokens_per_second") > 0, "a token rate above 0", timeout=5)


def test_failing_and_cancelled_requests_are_counted_by_status(server, info):
    idle(server)
    before = scrape(server)
    # Failing: a prompt plus max_tokens over the per-sequence capacity (INVALID_ARGUMENT
    # on gRPC, 400 on HTTP), and a body that is not JSON. None reaches the engine.
    failed = read_stream(server.stub.Generate(gen("Hello", max_tokens=info.max_sequence_tokens + 1), timeout=30))
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT, failed.details
    status, _ = http_json(server, "/v1/completions", {"model": info.name, "prompt": "Hello",
                                                      "max_tokens": info.max_sequence_tokens + 1})
    assert status == 400
    status, _ = http_json(server, "/v1/completions", b"{not json")
    assert status == 400

    # Cancelled on gRPC: the client cancels after the first delta.
    call = server.stub.Generate(gen("Count to one hundred:", max_tokens=400, ignore_eos=True), timeout=120)
    first = next(call)
    assert first.WhichOneof("event") == "delta"
    call.cancel()
    # Cancelled on HTTP: the client closes the connection of a stream after its first chunk.
    url = urllib.parse.urlsplit(server.http_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                 body=json.dumps({"model": info.name, "prompt": "Count to one hundred:", "max_tokens": 400,
                                  "stream": True, "ignore_eos": True}))
    response = conn.getresponse()
    assert response.status == 200
    line = response.readline()
    while line.startswith(b":") or line == b"\n":  # SSE keep-alive comments come first on a slow server
        line = response.readline()
    assert line.startswith(b"data: ")  # a token's chunk: the request is running
    sock = conn.sock
    response.close()
    sock.shutdown(socket.SHUT_RDWR)
    conn.close()

    after = wait_for(server, lambda s: requests_of(s, "grpc", "cancelled") - requests_of(before, "grpc", "cancelled") >= 1
                     and requests_of(s, "http", "cancelled") - requests_of(before, "http", "cancelled") >= 1,
                     "both cancellations counted")
    idle(server)
    after = scrape(server)
    assert delta(after, before, "flint_requests_total", api="grpc", status="invalid_argument") == 1
    assert delta(after, before, "flint_requests_total", api="http", status="4xx") == 2
    assert delta(after, before, "flint_requests_total", api="grpc", status="cancelled") == 1
    assert delta(after, before, "flint_requests_total", api="http", status="cancelled") == 1
    assert delta(after, before, "flint_requests_total", api="grpc", status="ok") == 0
    assert delta(after, before, "flint_requests_total", api="http", status="ok") == 0
    # Only the two cancelled requests reached the engine; each had produced a token.
    assert hist_delta(after, before, "flint_request_duration_seconds") == 2
    assert hist_delta(after, before, "flint_time_to_first_token_seconds") == 2
    assert delta(after, before, "flint_generation_tokens_total") >= 2
    # Their blocks are back.
    assert after.value("flint_kv_blocks_used") == 0
    assert after.value("flint_kv_blocks_free") == info.num_kv_blocks


def test_a_running_request_holds_blocks_and_one_behind_it_is_queued(server, info):
    idle(server)
    calls = [server.stub.Generate(gen("Story number 0:", max_tokens=400, ignore_eos=True), timeout=120)]
    try:
        assert next(calls[0]).WhichOneof("event") == "delta"  # it runs
        calls += [server.stub.Generate(gen(f"Story number {i}:", max_tokens=400, ignore_eos=True), timeout=120)
                  for i in (1, 2)]
        # --max-running-seqs 1: one runs, the other two wait.
        s = wait_for(server, lambda s: s.value("flint_queue_depth") == 2, "two requests queued")
        assert s.value("flint_running_sequences") == 1
        assert s.value("flint_kv_blocks_used") >= 1
        assert s.value("flint_kv_blocks_used") + s.value("flint_kv_blocks_free") == info.num_kv_blocks
        # GetServerStats agrees once the engine has taken them (its num_waiting leaves out
        # requests submitted during a step that the engine thread has not taken yet).
        end = time.monotonic() + 10
        while True:
            stats = server.stub.GetServerStats(pb.GetServerStatsRequest(), timeout=5)
            if (stats.num_waiting, stats.num_running) == (2, 1) or time.monotonic() > end:
                break
            time.sleep(0.05)
        assert (stats.num_waiting, stats.num_running) == (2, 1), stats
    finally:
        for c in calls:
            c.cancel()
    idle(server)
    s = scrape(server)
    assert s.value("flint_queue_depth") == 0
    assert s.value("flint_running_sequences") == 0
    assert s.value("flint_kv_blocks_used") == 0


def test_a_repeated_prompt_hits_the_prefix_cache(server, info):
    idle(server)
    before = scrape(server)
    # Long enough for several full blocks of 16 tokens.
    text = "The quick brown fox jumps over the lazy dog. " * 8
    first = read_stream(server.stub.Generate(gen(text, max_tokens=1), timeout=60))
    second = read_stream(server.stub.Generate(gen(text, max_tokens=1), timeout=60))
    assert_ok(first, "first")
    assert_ok(second, "second")
    idle(server)
    after = scrape(server)
    hit = delta(after, before, "flint_prefix_cache_hit_tokens_total")
    assert second.finished.usage.cached_prompt_tokens > 0
    assert hit == first.finished.usage.cached_prompt_tokens + second.finished.usage.cached_prompt_tokens
    assert delta(after, before, "flint_prefix_cache_query_tokens_total") == 2 * first.finished.usage.prompt_tokens
    assert after.value("flint_kv_blocks_cached") >= 1
    ratio = after.value("flint_prefix_cache_hit_ratio")
    assert ratio == pytest.approx(after.value("flint_prefix_cache_hit_tokens_total") /
                                  after.value("flint_prefix_cache_query_tokens_total"))


def test_without_the_flag_there_is_no_metrics_listener(fresh_server):
    d = fresh_server()
    assert d.metrics_url is None
    assert "metrics:            off" in d.log()
