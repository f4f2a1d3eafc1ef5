"""Test harness for flintd: the Python stubs (flint_stubs.py), a
flintd process on a free loopback port, and helpers that read one stream whole.

Environment: FLINTD (the flintd binary, default build/server/flintd) and
FLINT_MODEL (default models/SmolLM2-135M-Instruct.Q4_1.gguf), both relative to
the repository root when not absolute; FLINT_TEST_SLOWDOWN (default 1), how many
times slower than a Release build this flintd runs (a sanitizer build:
scripts/test-sanitizers.sh): it scales the time the tests allow work to take
(scaled()), never a deadline a test sets to see it expire. FLINTD_ARGS: flags
every flintd gets (e.g. "--device cuda"); FLINT_MODEL_TRIMMED=1: FLINT_MODEL is
the default model cut to a few layers (scripts/trim-gguf.py); FLINT_STUBS and
FLINT_PROTO_DESCRIPTORS: where the gRPC stubs come from (flint_stubs.py).
"""
import ctypes
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

# Before grpc is imported: with fork support on, grpcio (1.80 and later) restarts its
# poller in the child that subprocess.Popen forks (preexec_fn forces a fork), whose fds
# Popen then closes before exec; the poller's epoll_wait fails with EBADF and aborts
# the child, so flintd "exits with -6 before serving" now and then
# (https://github.com/grpc/grpc/issues/43055). The tests never fork a gRPC client.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _repo_path(env, default):
    path = Path(os.environ.get(env, default))
    return path if path.is_absolute() else REPO / path


FLINTD = _repo_path("FLINTD", "build/server/flintd")
FLINT_MODEL = _repo_path("FLINT_MODEL", "models/SmolLM2-135M-Instruct.Q4_1.gguf")
# Flags every flintd the tests start gets first (the tests' own come after and override), e.g. "--device cuda";
# DEVICE is the device they name ("cpu" by default), which GetModelInfo must report.
FLINTD_ARGS = shlex.split(os.environ.get("FLINTD_ARGS", ""))
DEVICE = next((FLINTD_ARGS[i + 1] for i, a in enumerate(FLINTD_ARGS[:-1]) if a == "--device"), "cpu")
# FLINT_MODEL_TRIMMED=1: FLINT_MODEL is the default model cut to its first layers (scripts/trim-gguf.py), with its
# tokenizer and template but not its answers; the few tests that need the whole model's behaviour skip.
TRIMMED = os.environ.get("FLINT_MODEL_TRIMMED", "") == "1"
SLOWDOWN = float(os.environ.get("FLINT_TEST_SLOWDOWN") or 1)
if SLOWDOWN < 1:
    raise RuntimeError(f"flintd_harness: FLINT_TEST_SLOWDOWN={SLOWDOWN}: want a factor >= 1")


def scaled(seconds):
    """A time allowed for work, tuned for a Release build, on this build (FLINT_TEST_SLOWDOWN)."""
    return seconds * SLOWDOWN

for _path, _how in ((FLINTD, "build it (cmake --build build --target flintd) or set FLINTD"),
                    (FLINT_MODEL, "run scripts/fetch-model.sh or set FLINT_MODEL")):
    if not _path.is_file():
        raise RuntimeError(f"flintd_harness: {_path} not found: {_how}")


from flint_stubs import health_pb2, health_pb2_grpc, pb, pb_grpc  # noqa: E402  (after the checks above)

OK = grpc.StatusCode.OK
SERVING = health_pb2.HealthCheckResponse.SERVING
# The flags of the server the tests share (conftest.py's `server`).
MAX_RUNNING_SEQS = 16
MAX_QUEUE = 64
KV_CACHE_MEMORY = "64MiB"

READY_LINE = re.compile(r"flintd: serving on ([0-9.]+):(\d+)")
HTTP_LINE = re.compile(r"flintd: (https?) on ([0-9.]+):(\d+)")
METRICS_LINE = re.compile(r"flintd: metrics on ([0-9.]+):(\d+)")


def _has_http_flag():
    """Whether this flintd has the HTTP API (--http-port); older builds refuse the flag."""
    out = subprocess.run([str(FLINTD), "--help"], capture_output=True, text=True, timeout=10)
    return "--http-port" in out.stdout + out.stderr


# Every flintd the tests start takes a free HTTP port too: two on the default 8000 would collide.
HTTP_FLAGS = ["--http-port", "0"] if _has_http_flag() else []


def _die_with_parent():
    # Linux: SIGKILL flintd when the test process dies (a CTest timeout, a crash).
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Flintd:
    """One flintd process on 127.0.0.1 with ports it picks; stderr goes to a log file.
    `address` is the gRPC HOST:PORT; `http_url` the HTTP API's base URL (http://HOST:PORT,
    or https:// with --tls-cert), None when this flintd has no HTTP API; `metrics_url` the
    Prometheus endpoint (http://HOST:PORT/metrics) when started with --metrics-port, else None.
    Flags given later override the defaults here. `channel_credentials`:
    grpc.ssl_channel_credentials for a flintd serving TLS. `env`: variables added to flintd's environment."""

    def __init__(self, log_dir, *flags, threads=2, startup_timeout=scaled(120.0), channel_credentials=None, env=None):
        self.log_path = Path(log_dir) / f"flintd-{os.getpid()}-{time.monotonic_ns()}.log"
        self.args = [str(FLINTD), "--model", str(FLINT_MODEL), "--host", "127.0.0.1", "--port", "0",
                     "--threads", str(threads), *FLINTD_ARGS, *HTTP_FLAGS, *map(str, flags)]
        self._log = open(self.log_path, "w+b")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     preexec_fn=_die_with_parent, env={**os.environ, **(env or {})})
        self.address = self._wait_for_ready_line(startup_timeout)
        m = HTTP_LINE.search(self.log())  # printed before the 'serving on' line
        self.http_url = f"{m.group(1)}://{m.group(2)}:{m.group(3)}" if m else None
        m = METRICS_LINE.search(self.log())  # printed before the 'serving on' line too
        self.metrics_url = f"http://{m.group(1)}:{m.group(2)}/metrics" if m else None
        self.channel = (grpc.secure_channel(self.address, channel_credentials) if channel_credentials
                        else grpc.insecure_channel(self.address))
        self.stub = pb_grpc.InferenceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self._wait_for_serving(startup_timeout)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def _wait_for_ready_line(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = READY_LINE.search(self.log())
            if m:
                return f"{m.group(1)}:{m.group(2)}"
            if self.proc.poll() is not None:
                raise RuntimeError(f"flintd exited with {self.proc.returncode} before serving:\n"
                                   f"{' '.join(self.args)}\n{self.log_tail()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"flintd printed no 'serving on' line in {timeout} s:\n{self.log_tail()}")

    def _wait_for_serving(self, timeout):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                status = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as e:
                last = f"{e.code()}: {e.details()}"
            if self.proc.poll() is not None:
                raise RuntimeError(f"flintd exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"flintd not SERVING after {timeout} s (last: {last}):\n{self.log_tail()}")

    def health_status(self, timeout=2):
        return self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self, grace=scaled(10.0)):
        """SIGTERM, then SIGKILL after `grace` seconds; closes the channel and the log."""
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
                print(f"flintd did not exit within {grace} s of SIGTERM; killed. Its log ends:\n{self.log_tail(8)}")
        self._log.close()


@dataclass
class StreamResult:
    """One Generate or Chat stream read to its end."""
    deltas: list = field(default_factory=list)   # pb.Delta, in order
    finished: object = None                      # pb.Finished, or None when the status was not OK
    events: list = field(default_factory=list)   # "delta" / "finished", in arrival order
    code: object = grpc.StatusCode.OK
    details: str = ""

    @property
    def token_ids(self):
        return [t for d in self.deltas for t in d.token_ids]

    @property
    def text(self):
        return "".join(d.text for d in self.deltas)

    @property
    def logprobs(self):
        return [lp for d in self.deltas for lp in d.logprobs]


def read_stream(call):
    """Reads a response iterator to its end; a non-OK status is recorded, not raised."""
    result = StreamResult()
    try:
        for response in call:
            kind = response.WhichOneof("event")
            result.events.append(kind)
            if kind == "delta":
                result.deltas.append(response.delta)
            elif kind == "finished":
                result.finished = response.finished
    except grpc.RpcError as e:
        result.code, result.details = e.code(), e.details()
    return result


def call_rpc(stub, request, timeout=scaled(120), **kwargs):
    """Starts Generate or Chat, chosen by the request's type."""
    method = stub.Chat if isinstance(request, pb.ChatRequest) else stub.Generate
    return method(request, timeout=timeout, **kwargs)


def run(stub, request, timeout=scaled(120)):
    return read_stream(call_rpc(stub, request, timeout=timeout))


# ---------------------------------------------------------------- requests and checks

def sampling(temperature=0.0, seed=None, **kw):
    s = pb.SamplingParams(temperature=temperature, **kw)
    if seed is not None:
        s.seed = seed
    return s


def gen(text, max_tokens=16, stop=(), top_logprobs=None, ignore_eos=False, request_id="", **sampling_kw):
    r = pb.GenerateRequest(text=text, sampling=sampling(**sampling_kw), request_id=request_id,
                           stopping=pb.StoppingCriteria(max_tokens=max_tokens, stop=list(stop), ignore_eos=ignore_eos))
    if top_logprobs is not None:
        r.logprobs.top_logprobs = top_logprobs
    return r


def chat(messages, max_tokens=16, stop=(), top_logprobs=None, ignore_eos=False, request_id="", **sampling_kw):
    """messages: (role, content) pairs, or one string for a single user message."""
    if isinstance(messages, str):
        messages = [("user", messages)]
    r = pb.ChatRequest(messages=[pb.ChatMessage(role=role, content=content) for role, content in messages],
                       sampling=sampling(**sampling_kw), request_id=request_id,
                       stopping=pb.StoppingCriteria(max_tokens=max_tokens, stop=list(stop), ignore_eos=ignore_eos))
    if top_logprobs is not None:
        r.logprobs.top_logprobs = top_logprobs
    return r


def prompt_tokens_of(stub, request):
    """The prompt the server should see for `request`, through Tokenize."""
    if isinstance(request, pb.ChatRequest):
        t = pb.TokenizeRequest(messages=request.messages)
    else:
        t = pb.TokenizeRequest(text=request.text)
    return list(stub.Tokenize(t, timeout=10).token_ids)


def assert_ok(result, what="stream"):
    assert result.code == OK, f"{what}: {result.code} {result.details!r}"
    assert result.finished is not None, f"{what}: ended OK without Finished"


def same_output(a, b, what, seeded=True):
    """The parts of two runs of one request that must match exactly (the seed too when `seeded`)."""
    assert_ok(a, what + " (solo)")
    assert_ok(b, what + " (batched)")
    assert b.token_ids == a.token_ids, f"{what}: token ids differ from the solo run"
    assert b.text == a.text, f"{what}: text differs from the solo run"
    assert b.finished.reason == a.finished.reason, what
    assert b.finished.matched_stop == a.finished.matched_stop, what
    assert b.finished.usage.completion_tokens == a.finished.usage.completion_tokens, what
    if seeded:
        assert b.finished.seed == a.finished.seed, what
    assert [lp.chosen.token_id for lp in b.logprobs] == [lp.chosen.token_id for lp in a.logprobs], what
    for x, y in zip(a.logprobs, b.logprobs):
        assert y.chosen.logprob == pytest.approx(x.chosen.logprob, abs=1e-3), what


# ---------------------------------------------------------------- limits that outlast generation on any device

def generation_rate(stub, at_least_s=0.5, prompt="Count the days of the year, one by one:"):
    """Tokens/s of one greedy stream on this server: a calibration request (ignore_eos) timed from its first
    Delta to its end, as the client receives them, and lengthened (repeated, so a first request's one-time
    costs are behind it) until that takes `at_least_s` or the request fills a sequence."""
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    most = info.max_sequence_tokens - len(prompt_tokens_of(stub, gen(prompt)))
    n = min(32, most)
    while True:
        call = call_rpc(stub, gen(prompt, max_tokens=n, ignore_eos=True))
        it = iter(call)
        first = next(it)
        assert first.WhichOneof("event") == "delta", first
        start = time.monotonic()
        rest = read_stream(it)
        elapsed = time.monotonic() - start
        assert_ok(rest, f"the calibration request ({n} tokens)")
        tokens = len(rest.token_ids)
        assert len(first.delta.token_ids) + tokens == n, "the calibration request ended early"
        if elapsed >= at_least_s or n == most:
            if tokens == 0 or elapsed <= 0:
                pytest.skip(f"cannot time generation: {n} tokens came in one Delta (sequences hold "
                            f"{info.max_sequence_tokens} tokens)")
            return tokens / elapsed
        n = min(most, max(2 * n, int(n * 1.5 * at_least_s / max(elapsed, 1e-3))))


def outlasting(stub, request, cap_s, fraction=0.25, floor_s=0.02):
    """For a test that needs `request` still generating when a time limit it sets runs out (a gRPC deadline from
    the call's start, a drain timeout from just after its first token): returns (a copy of `request` with
    max_tokens as large as a sequence allows, the limit in seconds). The limit is `fraction` of the time the
    server should take to generate those tokens (generation_rate()), at most `cap_s` (what a CPU server gets).
    Skips when even that would be under `floor_s`: this server generates a whole sequence too fast to outlast."""
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    max_tokens = info.max_sequence_tokens - len(prompt_tokens_of(stub, request))
    assert max_tokens > 1, (info.max_sequence_tokens, "the prompt leaves no room to generate")
    rate = generation_rate(stub)
    expected_s = max_tokens / rate
    limit_s = min(cap_s, fraction * expected_s)
    print(f"outlasting: {rate:.0f} tokens/s, max_tokens {max_tokens} (about {expected_s:.2f} s), limit {limit_s:.3f} s")
    if limit_s < floor_s:
        pytest.skip(f"this server generates {rate:.0f} tokens/s, the {max_tokens} a sequence has room for in "
                    f"{expected_s:.3f} s; {fraction} of that is under {floor_s} s, too short a limit to test with")
    long = type(request)()
    long.CopyFrom(request)
    long.stopping.max_tokens = max_tokens
    return long, limit_s


def wait_for_idle_stats(stub, timeout=scaled(10.0)):
    """GetServerStats once nothing runs or waits, or the last snapshot after `timeout` s."""
    end = time.monotonic() + timeout
    while True:
        stats = stub.GetServerStats(pb.GetServerStatsRequest(), timeout=5)
        if (stats.num_running == 0 and stats.num_waiting == 0 and stats.num_active_streams == 0) or \
                time.monotonic() > end:
            return stats
        time.sleep(0.05)
