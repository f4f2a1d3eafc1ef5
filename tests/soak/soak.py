"""Fault-and-load soak test for flintd: loopback only, bounded in time and count.

Keeps --streams requests in flight for --duration seconds over gRPC Generate and
Chat and the HTTP /v1/chat/completions API (SSE, and now and then one JSON
answer), with random prompt lengths, output limits, priorities, stop strings and
logprobs, and mixes in the faults a server meets in the field: clients that
cancel mid-stream, short deadlines, malformed requests (bad ranges, invalid UTF-8,
garbage protobuf bytes through raw methods, bad JSON, bytes that are not HTTP),
slow readers that leave a stream undrained, sockets closed (FIN or RST) mid-SSE
and client processes killed with SIGKILL mid-stream. The KV cache is small, so a
full batch preempts.

At the end it checks that every request ended with exactly one finish reason or
an error status (none hung, none just stopped), that flintd is alive and SERVING,
that the KV cache's blocks are all free again and no stream is left open, that
flintd's RSS after the run is within a tolerance of its plateau after warm-up,
and (when it started flintd) that flintd's log ends each request once. Exit
status 0 when all hold, 1 otherwise; the counts and the RSS series summary are
printed either way. A run of D seconds takes about D + 100 s on 2 cores: the
requests still queued when the load stops run to their end.

CI size (the CTest entry soak.flintd):
    .venv/bin/python tests/soak/soak.py --streams 200 --duration 100
A longer local run:
    .venv/bin/python tests/soak/soak.py --streams 256 --duration 900
Against a flintd already running (started with --http-threads above the number
of HTTP streams; its pid for the RSS series):
    .venv/bin/python tests/soak/soak.py --address 127.0.0.1:50051 --http-url http://127.0.0.1:8000 --pid 1234
"""
import argparse
import asyncio
import collections
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]

# How outcomes are named: "finished:<reason>", "status:<gRPC code>", "http:<status>",
# "sse-error:<type>", and the client's own doing: "client-cancelled", "client-closed",
# "killed". Anything in FAILURES fails the run.
FAILURES = ("hung", "no-finish", "multi-finish", "bad-stream", "unexpected")

WORDS = ("the quick brown fox jumps over a lazy dog while rain falls on old stone roads near quiet "
         "rivers and tall trees where birds sing songs of summer light across green hills").split()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=200, help="requests kept in flight (default 200)")
    p.add_argument("--duration", type=float, default=180.0, help="seconds of load (default 180)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds before the RSS plateau is measured (default: a quarter of the duration, at most 60)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--flintd", default=os.environ.get("FLINTD", "build/server/flintd"), help="the flintd binary")
    p.add_argument("--model", default=os.environ.get("FLINT_MODEL", "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    p.add_argument("--threads", type=int, default=2, help="flintd --threads (default 2)")
    p.add_argument("--kv-cache-memory", default="24MiB",
                   help="flintd --kv-cache-memory (default 24MiB: 34 blocks of 16 tokens, so the batch preempts)")
    p.add_argument("--address", help="gRPC HOST:PORT of a running flintd (then none is started)")
    p.add_argument("--http-url", help="with --address: the HTTP API's base URL (none: no HTTP traffic)")
    p.add_argument("--pid", type=int, help="with --address: flintd's pid, for the RSS series")
    # The CPU model does some 50-100 tokens/s in all on 2 cores, prompts included: keep both short.
    p.add_argument("--max-tokens", type=int, default=8, help="largest random max_tokens (default 8)")
    p.add_argument("--max-prompt-words", type=int, default=60, help="longest random prompt in words (default 60)")
    p.add_argument("--max-batched-tokens", type=int, default=256,
                   help="flintd --max-batched-tokens (default 256: short steps, so streams interleave)")
    p.add_argument("--hang-timeout", type=float, default=300.0,
                   help="a request open this long (queue wait included) counts as hung (default 300)")
    p.add_argument("--rss-tolerance", type=float, default=0.10,
                   help="allowed RSS growth, end over plateau, as a fraction (default 0.10)")
    p.add_argument("--rss-slack-mib", type=float, default=24.0,
                   help="allowed RSS growth in MiB on top of the fraction (default 24)")
    p.add_argument("--log-dir", default=None, help="where flintd's log goes (default: a temporary directory)")
    a = p.parse_args()
    if a.streams < 1 or a.duration <= 0 or a.max_tokens < 1 or a.max_prompt_words < 1:
        p.error("--streams, --duration, --max-tokens and --max-prompt-words must be positive")
    if a.warmup is None:
        a.warmup = min(60.0, a.duration / 4)
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    return a


ARGS = parse_args()
# flintd_harness reads these when imported: the binary it starts and the model it serves.
os.environ["FLINTD"] = str(Path(ARGS.flintd).resolve()) if not Path(ARGS.flintd).is_absolute() else ARGS.flintd
os.environ["FLINT_MODEL"] = str(Path(ARGS.model).resolve()) if not Path(ARGS.model).is_absolute() else ARGS.model
sys.path.insert(0, str(REPO / "tests/e2e"))
# As in flintd_harness.py: grpcio's fork support aborts a flintd started while channels are open.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402

from flint_stubs import health_pb2, health_pb2_grpc, pb, pb_grpc  # noqa: E402


# ---------------------------------------------------------------- outcomes

@dataclass
class Tally:
    """Outcome counts per scenario, and the failures in full (the first few are printed)."""
    counts: dict = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    failures: list = field(default_factory=list)
    finished_ids: list = field(default_factory=list)  # request ids the client saw finish
    started: int = 0
    open_now: int = 0
    max_open: int = 0

    def begin(self):
        self.started += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)

    def end(self, scenario, outcome, detail=""):
        self.open_now -= 1
        self.counts[scenario][outcome] += 1
        if outcome.split(":")[0] in FAILURES:
            self.failures.append(f"{scenario}: {outcome} {detail}".strip())


TALLY = Tally()
RUN_ID = f"soak{os.getpid()}"  # request ids are RUN_ID-...: unique among the runs one flintd may see
MODEL_NAME = ""  # the served model's, which the HTTP API wants in "model"; set once connected


class Rng(random.Random):
    def prompt(self):
        # Mostly short prompts, now and then a long one (prefill in chunks).
        n = self.randint(1, 12) if self.random() < 0.85 else self.randint(1, ARGS.max_prompt_words)
        return " ".join(self.choice(WORDS) for _ in range(n))

    def max_tokens(self):
        return self.randint(1, ARGS.max_tokens)


def sampling(rng):
    s = pb.SamplingParams(temperature=rng.choice([0.0, 0.7, 1.0]), seed=rng.randrange(1 << 32))
    if rng.random() < 0.3:
        s.top_k = rng.randint(1, 50)
    return s


def priority(rng):
    # Now and then a higher or lower priority: with the KV cache full, higher ones preempt.
    return rng.choice([-3, 0, 0, 0, 0, 0, 5])


# The scheduler runs higher priorities first, without aging: under a load that never lets up,
# a low-priority request may wait for ever. Its client's deadline is the way out, so those get one.
LOW_PRIORITY_DEADLINE = 60.0


def start_call(stub, req, timeout=None):
    """Starts Generate or Chat (by the request's type); a low-priority request gets a deadline."""
    if req.priority < 0 and timeout is None:
        timeout = LOW_PRIORITY_DEADLINE
    return (stub.Chat if isinstance(req, pb.ChatRequest) else stub.Generate)(req, timeout=timeout)


def allowed_for(req, allowed):
    return allowed | {"status:DEADLINE_EXCEEDED"} if req.priority < 0 else allowed


def stopping(rng):
    # Stop strings now and then (text held back across tokens), and sometimes logprobs.
    stop = rng.sample([" the", ".", "\n", "a", ","], rng.randint(1, 3)) if rng.random() < 0.25 else []
    return pb.StoppingCriteria(max_tokens=rng.max_tokens(), ignore_eos=rng.random() < 0.5, stop=stop)


def with_extras(rng, req):
    if rng.random() < 0.2:
        req.logprobs.top_logprobs = rng.randint(0, 5)
    return req


def generate_request(rng, rid):
    return with_extras(rng, pb.GenerateRequest(text=rng.prompt(), sampling=sampling(rng), request_id=rid,
                                               priority=priority(rng), stopping=stopping(rng)))


def chat_request(rng, rid):
    messages = [pb.ChatMessage(role="user", content=rng.prompt())]
    if rng.random() < 0.3:
        messages.insert(0, pb.ChatMessage(role="system", content="Answer briefly."))
    return with_extras(rng, pb.ChatRequest(messages=messages, sampling=sampling(rng), request_id=rid,
                                           priority=priority(rng), stopping=stopping(rng)))


def http_chat_body(rng, stream=True):
    body = {"model": MODEL_NAME, "stream": stream, "messages": [{"role": "user", "content": rng.prompt()}],
            "max_tokens": rng.max_tokens(), "temperature": rng.choice([0.0, 0.8]), "seed": rng.randrange(1 << 31)}
    if stream:
        body["stream_options"] = {"include_usage": rng.random() < 0.5}
    if rng.random() < 0.25:
        body["stop"] = rng.sample([" the", ".", "\n", ","], rng.randint(1, 3))
    if rng.random() < 0.2:
        body["logprobs"], body["top_logprobs"] = True, rng.randint(0, 5)
    return body


# ---------------------------------------------------------------- gRPC

class GrpcClients:
    """A few channels (separate HTTP/2 connections) that the streams share, and raw methods for bytes."""

    def __init__(self, address, n=4):
        # A local subchannel pool per channel: otherwise channels to one address share a connection.
        self.channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(n)]
        self.stubs = [pb_grpc.InferenceStub(c) for c in self.channels]
        # For slow readers: a 1 KiB stream window (no BDP probing to grow it), so that an undrained
        # stream's output fills it and the server's writes wait on flow control.
        self.slow_channel = grpc.aio.insecure_channel(address, options=[
            ("grpc.use_local_subchannel_pool", 1), ("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)])
        self.slow_stub = pb_grpc.InferenceStub(self.slow_channel)
        self.raw = {m: [c.unary_stream(f"/flint.v1.Inference/{m}") for c in self.channels] for m in ("Generate", "Chat")}
        self.raw.update({m: [c.unary_unary(f"/flint.v1.Inference/{m}") for c in self.channels]
                         for m in ("Tokenize", "Detokenize")})

    def pick(self, rng):
        return rng.randrange(len(self.channels))

    async def close(self):
        for c in self.channels + [self.slow_channel]:
            await c.close()


async def read_grpc(call, limit_messages=None):
    """Reads a stream to its end: ("finished:<reason>" | "status:<CODE>" | failure, detail), or
    ("open", n) after `limit_messages` messages with the call still going."""
    deltas = 0
    finished = None
    try:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                break
            if isinstance(msg, bytes):  # a raw method
                msg = pb.GenerateResponse.FromString(msg)
            kind = msg.WhichOneof("event")
            if finished is not None:
                return "multi-finish", f"a {kind} after Finished"
            if kind == "finished":
                finished = pb.FinishReason.Name(msg.finished.reason)
            else:
                deltas += 1
                if limit_messages is not None and deltas >= limit_messages:
                    return "open", deltas
    except grpc.aio.AioRpcError as e:
        if finished is not None:
            return "multi-finish", f"status {e.code().name} after Finished"
        return f"status:{e.code().name}", e.details()
    code = await call.code()
    if code != grpc.StatusCode.OK:
        return f"status:{code.name}", await call.details()
    if finished is None:
        return "no-finish", f"status OK after {deltas} deltas and no Finished"
    return f"finished:{finished.lower().removeprefix('finish_reason_')}", ""


async def bounded(coro, scenario, rid):
    """Runs one request's coroutine under the hang timeout and records its outcome."""
    TALLY.begin()
    try:
        outcome, detail = await asyncio.wait_for(coro, ARGS.hang_timeout)
    except asyncio.TimeoutError:
        outcome, detail = "hung", f"open after {ARGS.hang_timeout:.0f} s"
    except (ConnectionError, OSError, asyncio.IncompleteReadError) as e:
        outcome, detail = "bad-stream", f"{type(e).__name__}: {e}"
    TALLY.end(scenario, outcome, f"{rid}: {str(detail)[:200]}")
    if outcome.startswith("finished:"):
        TALLY.finished_ids.append(rid)
    return outcome


# Outcomes a request of each sort may have; anything else is "unexpected".
NORMAL_GRPC = {"finished:stop", "finished:length", "status:RESOURCE_EXHAUSTED"}


def expect(result, allowed):
    """`result` (outcome, detail) as it is when the outcome is one of `allowed` or a failure, else unexpected."""
    outcome, detail = result
    if outcome in allowed or outcome.split(":")[0] in FAILURES:
        return outcome, detail
    return f"unexpected:{outcome}", detail


async def grpc_stream(cl, rng, chat, rid):
    req = chat_request(rng, rid) if chat else generate_request(rng, rid)
    call = start_call(cl.stubs[cl.pick(rng)], req)
    return expect(await read_grpc(call), allowed_for(req, NORMAL_GRPC))


async def grpc_cancel(cl, rng, rid):
    """Cancels after a few deltas (or before any, while the request may still wait)."""
    stub = cl.stubs[cl.pick(rng)]
    req = generate_request(rng, rid)
    req.stopping.max_tokens = max(req.stopping.max_tokens, 6)
    req.stopping.ignore_eos = True
    call = start_call(stub, req)
    k = rng.randint(0, 3)
    if k == 0:
        await asyncio.sleep(rng.uniform(0, 2))
        call.cancel()
        return "client-cancelled", ""
    outcome, detail = await read_grpc(call, limit_messages=k)
    if outcome != "open":
        return expect((outcome, detail), allowed_for(req, NORMAL_GRPC))
    call.cancel()
    return "client-cancelled", ""


async def grpc_deadline(cl, rng, rid):
    stub = cl.stubs[cl.pick(rng)]
    req = chat_request(rng, rid) if rng.random() < 0.5 else generate_request(rng, rid)
    timeout = rng.choice([0.001, 0.05, 0.3, 1.0, 3.0])
    call = start_call(stub, req, timeout)
    return expect(await read_grpc(call), NORMAL_GRPC | {"status:DEADLINE_EXCEEDED"})


async def grpc_slow_reader(cl, rng, rid):
    """Opens a stream with a longer output and reads nothing for a while."""
    stub = cl.slow_stub if rng.random() < 0.5 else cl.stubs[cl.pick(rng)]
    req = generate_request(rng, rid)
    req.stopping.max_tokens = ARGS.max_tokens * 3
    req.stopping.ignore_eos = True
    req.logprobs.top_logprobs = 20  # bigger messages
    call = start_call(stub, req)
    await asyncio.sleep(rng.uniform(5, 20))
    return expect(await read_grpc(call), allowed_for(req, NORMAL_GRPC))


def bad_range_request(rng, rid):
    """A request with one field out of its documented range."""
    req = generate_request(rng, rid)
    which = rng.randrange(9)
    if which == 0:
        req.sampling.temperature = -1.0
    elif which == 1:
        req.sampling.top_p = 1.5
    elif which == 2:
        req.stopping.max_tokens = 0
    elif which == 3:
        req.stopping.max_tokens = 1 << 30
    elif which == 4:
        req.logprobs.top_logprobs = 99
    elif which == 5:
        req.priority = 5000
    elif which == 6:
        req.token_ids.ids.extend([1, -5, 1 << 30])
    elif which == 7:
        req.request_id = "x" * 300
    else:
        req.sampling.presence_penalty = 7.0
    return req


def invalid_utf8_bytes(rng):
    """A GenerateRequest (or ChatRequest) whose text has bytes that are not UTF-8."""
    text = b"hello " + bytes(rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
    if rng.random() < 0.5:
        return "Generate", b"\x0a" + bytes([len(text)]) + text
    msg = b"\x0a\x04user\x12" + bytes([len(text)]) + text  # ChatMessage{role, content}
    return "Chat", b"\x0a" + bytes([len(msg)]) + msg


def garbage_bytes(rng):
    """Bytes that do not parse as a message: an overlong length, a bad wire type or a cut varint."""
    tail = rng.randbytes(rng.randint(0, 64))
    return rng.choice([b"\x0a\xff\xff\xff\xff\x0f" + tail,   # field 1, length past the end
                       b"\x0f" + tail,                       # wire type 7
                       b"\x2a\x80\x80\x80",                  # a length varint cut short
                       b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"])  # an 11-byte varint


async def grpc_malformed(cl, rng, rid):
    i = cl.pick(rng)
    which = rng.randrange(5)
    if which == 3:  # the unary methods, garbage in
        try:
            await cl.raw[rng.choice(["Tokenize", "Detokenize"])][i](garbage_bytes(rng), timeout=30)
            return "unexpected:OK", "garbage bytes accepted"
        except grpc.aio.AioRpcError as e:
            return expect((f"status:{e.code().name}", e.details()), {"status:INVALID_ARGUMENT"})
    if which == 4:  # token ids outside the vocabulary
        try:
            await cl.stubs[i].Detokenize(pb.DetokenizeRequest(token_ids=[1, rng.choice([-1, 1 << 30])]), timeout=30)
            return "unexpected:OK", "bad token ids accepted"
        except grpc.aio.AioRpcError as e:
            return expect((f"status:{e.code().name}", e.details()), {"status:INVALID_ARGUMENT"})
    if which == 0:
        call = cl.stubs[i].Generate(bad_range_request(rng, rid))
    elif which == 1:
        method, data = invalid_utf8_bytes(rng)
        call = cl.raw[method][i](data)
    else:
        call = cl.raw[rng.choice(["Generate", "Chat"])][i](garbage_bytes(rng))
    return expect(await read_grpc(call), {"status:INVALID_ARGUMENT"})


# ---------------------------------------------------------------- HTTP

class Http:
    def __init__(self, url):
        u = urlsplit(url)
        self.host, self.port = u.hostname, u.port

    async def open(self, body_bytes, rid, path="/v1/chat/completions"):
        reader, writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"X-Request-Id: {rid}\r\nContent-Length: {len(body_bytes)}\r\nConnection: close\r\n\r\n")
        writer.write(head.encode() + body_bytes)
        await writer.drain()
        return reader, writer

    @staticmethod
    async def read_head(reader):
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection before answering")
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers

    @staticmethod
    async def chunks(reader):
        """The chunked body's chunks, as they come."""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data


async def read_sse(reader, stop_after_chunks=None):
    """Reads an SSE answer whole: ("finished:<reason>" | "sse-error:<type>" | "http:<status>" | failure, detail),
    or ("open", n) after `stop_after_chunks` content chunks."""
    status, headers = await Http.read_head(reader)
    if status != 200:
        body = await reader.read()
        try:
            err = json.loads(body)["error"]["type"]
        except (ValueError, KeyError, TypeError):
            return "bad-stream", f"HTTP {status} without an OpenAI error body: {body[:100]!r}"
        return f"http:{status}", err
    if headers.get("transfer-encoding") != "chunked":
        return "bad-stream", f"a 200 stream that is not chunked: {headers}"
    buf, finish, error, done, content_chunks = b"", None, None, False, 0
    async for data in Http.chunks(reader):
        buf += data
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if event.startswith(b":"):
                continue  # keep-alive
            if not event.startswith(b"data: "):
                return "bad-stream", f"not an SSE data line: {event[:80]!r}"
            payload = event[6:]
            if done or error is not None:
                return "multi-finish", f"an event after the end: {payload[:80]!r}"
            if payload == b"[DONE]":
                if finish is None:
                    return "no-finish", "[DONE] without a finish_reason"
                done = True
                continue
            obj = json.loads(payload)
            if "error" in obj:
                if finish is not None:
                    return "multi-finish", "an error event after the finish_reason"
                error = obj["error"].get("type", "?")
                continue
            for choice in obj.get("choices", []):
                if choice.get("finish_reason"):
                    if finish is not None:
                        return "multi-finish", "two finish_reason chunks"
                    finish = choice["finish_reason"]
                elif choice.get("delta", {}).get("content"):
                    content_chunks += 1
                    if stop_after_chunks is not None and content_chunks >= stop_after_chunks:
                        return "open", content_chunks
    if error is not None:
        return f"sse-error:{error}", ""
    if finish is None or not done:
        return "no-finish", f"the stream ended (finish_reason {finish}, [DONE] {done})"
    return f"finished:{finish}", ""


NORMAL_HTTP = {"finished:stop", "finished:length", "http:429"}


async def close_writer(writer, reset=False):
    if reset:  # RST instead of FIN
        sock = writer.get_extra_info("socket")
        import socket
        import struct
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


async def http_stream(http, rng, rid):
    reader, writer = await http.open(json.dumps(http_chat_body(rng)).encode(), rid)
    try:
        return expect(await read_sse(reader), NORMAL_HTTP)
    finally:
        await close_writer(writer)


async def http_close_mid_sse(http, rng, rid):
    body = http_chat_body(rng)
    body["max_tokens"] = max(body["max_tokens"], 6)
    body["ignore_eos"] = True
    reader, writer = await http.open(json.dumps(body).encode(), rid)
    try:
        outcome, detail = await read_sse(reader, stop_after_chunks=rng.randint(1, 3))
        if outcome != "open":
            return expect((outcome, detail), NORMAL_HTTP)
        return "client-closed", ""
    finally:
        await close_writer(writer, reset=rng.random() < 0.5)


async def http_slow_reader(http, rng, rid):
    body = http_chat_body(rng)
    body["max_tokens"] = ARGS.max_tokens * 3
    body["ignore_eos"] = True
    reader, writer = await http.open(json.dumps(body).encode(), rid)
    try:
        await asyncio.sleep(rng.uniform(5, 20))
        return expect(await read_sse(reader), NORMAL_HTTP)
    finally:
        await close_writer(writer)


async def http_json(http, rng, rid):
    """A request answered as one JSON body; now and then the client leaves while it waits."""
    reader, writer = await http.open(json.dumps(http_chat_body(rng, stream=False)).encode(), rid)
    try:
        if rng.random() < 0.3:
            await asyncio.sleep(rng.uniform(0.5, 3))
            return "client-closed", ""
        status, headers = await Http.read_head(reader)
        body = await reader.read()
        try:
            obj = json.loads(body)
        except ValueError:
            return "bad-stream", f"HTTP {status}, a body that is not JSON: {body[:100]!r}"
        if status != 200:
            return expect((f"http:{status}", obj.get("error", {}).get("type", "?")), {"http:429"})
        reasons = [c.get("finish_reason") for c in obj.get("choices", [])]
        if len(reasons) != 1 or not reasons[0]:
            return "no-finish", f"finish reasons {reasons}"
        return expect((f"finished:{reasons[0]}", ""), NORMAL_HTTP)
    finally:
        await close_writer(writer)


async def http_malformed(http, rng, rid):
    which = rng.randrange(7)
    if which == 6:  # not HTTP at all
        reader, writer = await asyncio.open_connection(http.host, http.port)
        writer.write(rng.choice([b"GARBAGE \x00\xff\r\n\r\n", b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                                 b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(64) + b"\r\n\r\n"]))
        await writer.drain()
        try:  # httplib reads a negative Content-Length as a huge one: 413
            return expect(await read_sse(reader), {"http:400", "http:413"})
        finally:
            await close_writer(writer)
    if which == 0:
        data = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"' % MODEL_NAME.encode()  # cut short
    elif which == 1:
        data = b'{"model": "%s", "messages": [{"role": "user", "content": "\xff\xfe"}]}' % MODEL_NAME.encode()
    elif which == 2:
        data = json.dumps({"model": MODEL_NAME, "messages": "hello", "stream": True}).encode()
    elif which == 3:
        data = json.dumps({"model": MODEL_NAME, "stream": True, "max_tokens": -3,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
    elif which == 4:
        data = json.dumps({"model": MODEL_NAME, "stream": True, "temperature": "hot",
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
    else:
        data = rng.randbytes(rng.randint(1, 200))
    reader, writer = await http.open(data, rid)
    try:
        return expect(await read_sse(reader), {"http:400"})
    finally:
        await close_writer(writer)


# ---------------------------------------------------------------- clients that vanish

CHILD = r"""
import socket, sys, threading, time, grpc
address, http_host, http_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
grpc_reqs = [bytes.fromhex(h) for h in sys.argv[4].split(",") if h]
http_bodies = [bytes.fromhex(h) for h in sys.argv[5].split(",") if h]
ready = threading.Semaphore(0)
def grpc_stream(data):
    ch = grpc.insecure_channel(address)
    it = ch.unary_stream("/flint.v1.Inference/Generate")(data)
    for _ in it:
        ready.release()
        time.sleep(3600)
def http_stream(body):
    s = socket.create_connection((http_host, http_port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    s.recv(1)
    ready.release()
    time.sleep(3600)
n = 0
for d in grpc_reqs:
    threading.Thread(target=grpc_stream, args=(d,), daemon=True).start(); n += 1
for b in http_bodies:
    threading.Thread(target=http_stream, args=(b,), daemon=True).start(); n += 1
for _ in range(n):
    ready.acquire()
print("ready", flush=True)
time.sleep(3600)
"""


async def killed_client(address, http, rng, first_id):
    """A child process with a few streams, SIGKILLed once they all stream (or at a random moment before)."""
    grpc_reqs = []
    for i in range(rng.randint(1, 4)):
        req = generate_request(rng, f"{first_id}-{i}")
        req.stopping.max_tokens = ARGS.max_tokens * 2
        req.stopping.ignore_eos = True
        grpc_reqs.append(req.SerializeToString().hex())
    http_bodies = []
    if http:
        for _ in range(rng.randint(0, 2)):
            body = http_chat_body(rng)
            body["max_tokens"] = ARGS.max_tokens * 2
            body["ignore_eos"] = True
            http_bodies.append(json.dumps(body).encode().hex())
    n = len(grpc_reqs) + len(http_bodies)
    for _ in range(n):
        TALLY.begin()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, address, http.host if http else "", str(http.port if http else 0),
        ",".join(grpc_reqs), ",".join(http_bodies), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        await asyncio.wait_for(proc.stdout.readline(), rng.choice([2.0, 10.0, 60.0]))
    except asyncio.TimeoutError:
        pass  # killed while some streams wait in the queue
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    for _ in range(n):
        TALLY.end("killed-client", "killed")


# ---------------------------------------------------------------- the run

SCENARIOS = [  # (name, weight)
    ("grpc-generate", 24), ("grpc-chat", 24), ("http-sse", 18), ("grpc-cancel", 7), ("grpc-deadline", 7),
    ("http-close", 5), ("http-json", 4), ("grpc-slow-reader", 3), ("http-slow-reader", 3), ("grpc-malformed", 5),
    ("http-malformed", 4),
]


async def slot(index, cl, http, end_time, seed):
    rng = Rng(seed * 1000003 + index)
    names = [n for n, _ in SCENARIOS if http or not n.startswith("http")]
    weights = [w for n, w in SCENARIOS if http or not n.startswith("http")]
    n = 0
    while time.monotonic() < end_time:
        scenario = rng.choices(names, weights)[0]
        rid = f"{RUN_ID}-{index}-{n}"
        n += 1
        coro = {
            "grpc-generate": lambda: grpc_stream(cl, rng, False, rid),
            "grpc-chat": lambda: grpc_stream(cl, rng, True, rid),
            "grpc-cancel": lambda: grpc_cancel(cl, rng, rid),
            "grpc-deadline": lambda: grpc_deadline(cl, rng, rid),
            "grpc-slow-reader": lambda: grpc_slow_reader(cl, rng, rid),
            "grpc-malformed": lambda: grpc_malformed(cl, rng, rid),
            "http-sse": lambda: http_stream(http, rng, rid),
            "http-close": lambda: http_close_mid_sse(http, rng, rid),
            "http-json": lambda: http_json(http, rng, rid),
            "http-slow-reader": lambda: http_slow_reader(http, rng, rid),
            "http-malformed": lambda: http_malformed(http, rng, rid),
        }[scenario]()
        await bounded(coro, scenario, rid)
        if scenario.endswith("malformed"):
            await asyncio.sleep(rng.uniform(0.2, 1.0))  # they are quick: keep the load on real streams


async def killer(address, http, end_time, seed):
    rng = Rng(seed ^ 0x5EED)
    n = 0
    while time.monotonic() < end_time - 5:
        await asyncio.sleep(rng.uniform(3, 10))
        await killed_client(address, http, rng, f"{RUN_ID}-kill-{n}")
        n += 1


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


async def sampler(pid, stub, t0, stop, rss, stats):
    while not stop.is_set():
        t = time.monotonic() - t0
        if pid:
            rss.append((t, rss_kib(pid)))
        try:
            s = await stub.GetServerStats(pb.GetServerStatsRequest(), timeout=5)
            stats.append((t, s.num_active_streams, s.num_running, s.num_waiting, TALLY.open_now))
        except grpc.aio.AioRpcError as e:
            stats.append((t, None, None, None, TALLY.open_now))
            TALLY.failures.append(f"GetServerStats during the run: {e.code().name} {e.details()}")
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


async def wait_idle(stub, timeout=60.0):
    """GetServerStats once nothing runs, waits or streams, or the last snapshot after `timeout`."""
    end = time.monotonic() + timeout
    while True:
        s = await stub.GetServerStats(pb.GetServerStatsRequest(), timeout=5)
        idle = s.num_running == 0 and s.num_waiting == 0 and s.num_active_streams == 0 and \
            s.num_free_kv_blocks == s.num_kv_blocks
        if idle or time.monotonic() > end:
            return s
        await asyncio.sleep(0.1)


async def soak(address, http_url, pid):
    cl = GrpcClients(address)
    http = Http(http_url) if http_url else None
    health = health_pb2_grpc.HealthStub(cl.channels[0])
    stub = cl.stubs[0]
    info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    global MODEL_NAME
    MODEL_NAME = info.name
    print(f"soak: flintd {info.server_version} at {address} (http {http_url}), model {info.name}, "
          f"{info.num_kv_blocks} KV blocks, max_running_seqs {info.max_running_seqs}, max_queue {info.max_queue}")
    print(f"soak: {ARGS.streams} streams for {ARGS.duration:.0f} s (warm-up {ARGS.warmup:.0f} s), seed {ARGS.seed}, "
          f"max_tokens 1..{ARGS.max_tokens}, prompts 1..{ARGS.max_prompt_words} words", flush=True)
    t0 = time.monotonic()
    end_time = t0 + ARGS.duration
    stop = asyncio.Event()
    rss, stats = [], []
    sampling_task = asyncio.create_task(sampler(pid, stub, t0, stop, rss, stats))
    progress = asyncio.create_task(report_progress(t0, stats))
    tasks = [asyncio.create_task(slot(i, cl, http, end_time, ARGS.seed)) for i in range(ARGS.streams)]
    tasks.append(asyncio.create_task(killer(address, http, end_time, ARGS.seed)))
    await asyncio.gather(*tasks)
    load_end = time.monotonic() - t0
    progress.cancel()
    idle = await wait_idle(stub)
    stop.set()
    await sampling_task
    t_idle = time.monotonic() - t0
    rss_idle = rss_kib(pid) if pid else None
    try:
        serving = (await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)).status
    except grpc.aio.AioRpcError as e:
        serving = f"{e.code().name}: {e.details()}"
    await cl.close()
    return summarize(idle, serving, rss, rss_idle, stats, load_end, t_idle)


async def report_progress(t0, stats):
    while True:
        await asyncio.sleep(15)
        done = sum(sum(c.values()) for c in TALLY.counts.values())
        last = stats[-1] if stats else None
        print(f"soak: {time.monotonic() - t0:6.0f} s: {TALLY.started} started, {done} ended, {TALLY.open_now} open "
              f"(server: {last[1] if last else '?'} streams, {last[2] if last else '?'} running, "
              f"{last[3] if last else '?'} waiting), {len(TALLY.failures)} failures", flush=True)


def summarize(idle, serving, rss, rss_idle, stats, load_end, t_idle):
    ok = True
    print("\nsoak: outcomes by scenario")
    totals = collections.Counter()
    for scenario in sorted(TALLY.counts):
        c = TALLY.counts[scenario]
        totals.update(c)
        print(f"  {scenario:18s} {sum(c.values()):6d}  " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    ended = sum(totals.values())
    print(f"  {'all':18s} {ended:6d}  " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    if ended != TALLY.started or TALLY.open_now != 0:
        TALLY.failures.append(f"{TALLY.started} requests started, {ended} ended, {TALLY.open_now} still open")
    open_counts = [s[4] for s in stats if s[0] < ARGS.duration]
    server_streams = [s[1] for s in stats if s[0] < ARGS.duration and s[1] is not None]
    if open_counts:
        print(f"soak: client requests open, sampled each second: min {min(open_counts)} "
              f"(after the first 5 s: {min([s[4] for s in stats if 5 < s[0] < ARGS.duration] or [0])}), "
              f"median {statistics.median(open_counts):.0f}, max {TALLY.max_open}; server streams open: max "
              f"{max(server_streams or [0])}, median {statistics.median(server_streams or [0]):.0f}")
    print(f"soak: after the load: {idle.num_running} running, {idle.num_waiting} waiting, {idle.num_active_streams} "
          f"streams open, {idle.num_free_kv_blocks}/{idle.num_kv_blocks} KV blocks free, {idle.num_steps} steps, "
          f"{idle.num_preemptions} preemptions; health "
          f"{health_pb2.HealthCheckResponse.ServingStatus.Name(serving) if isinstance(serving, int) else serving}")
    if idle.num_running or idle.num_waiting or idle.num_active_streams:
        TALLY.failures.append(f"not idle 60 s after the load: {idle.num_running} running, {idle.num_waiting} waiting, "
                              f"{idle.num_active_streams} streams open")
    if idle.num_free_kv_blocks != idle.num_kv_blocks:
        TALLY.failures.append(f"KV blocks leaked: {idle.num_free_kv_blocks} of {idle.num_kv_blocks} free when idle")
    if serving != health_pb2.HealthCheckResponse.SERVING:
        TALLY.failures.append(f"health is {serving}, not SERVING")
    if rss:
        ok = check_rss(rss, rss_idle, load_end, t_idle) and ok
    if TALLY.failures:
        print(f"soak: FAILED: {len(TALLY.failures)} failures; the first 20:")
        for f in TALLY.failures[:20]:
            print("  " + f)
        ok = False
    print("soak: PASSED" if ok else "soak: FAILED")
    return ok


def check_rss(rss, rss_idle, load_end, t_idle):
    """The plateau is the median of the samples in the first third after warm-up; the end, the median of the
    last tenth of the load and the value once idle; both must be within tolerance of the plateau."""
    mib = lambda kib: kib / 1024  # noqa: E731
    loaded = [(t, v) for t, v in rss if t <= load_end]
    after = [v for t, v in loaded if ARGS.warmup <= t]
    if len(after) < 6:
        print(f"soak: RSS: too few samples after the {ARGS.warmup:.0f} s warm-up to judge ({len(after)})")
        return False
    plateau = statistics.median(after[: max(3, len(after) // 3)])
    end = statistics.median(after[-max(3, len(after) // 10):])
    limit = plateau * (1 + ARGS.rss_tolerance) + ARGS.rss_slack_mib * 1024
    series = " ".join(f"{t:.0f}s:{mib(v):.0f}" for t, v in loaded[:: max(1, len(loaded) // 12)])
    print(f"soak: RSS MiB: start {mib(rss[0][1]):.1f}, max {mib(max(v for _, v in rss)):.1f}, "
          f"plateau (after warm-up) {mib(plateau):.1f}, end of load {mib(end):.1f}, idle at {t_idle:.0f} s "
          f"{mib(rss_idle):.1f}; limit {mib(limit):.1f} (plateau + {ARGS.rss_tolerance:.0%} + {ARGS.rss_slack_mib:g} MiB)")
    print(f"soak: RSS series (s:MiB): {series}")
    ok = True
    for what, v in (("at the end of the load", end), ("when idle", rss_idle)):
        if v > limit:
            TALLY.failures.append(f"RSS grew: {mib(v):.1f} MiB {what} over the plateau's {mib(plateau):.1f} MiB "
                                  f"(limit {mib(limit):.1f} MiB)")
            ok = False
    return ok


END_LINE = re.compile(r"^flintd: (?:Generate|Chat|HTTP chat|HTTP completion) \d+ (\S+): (.*)$", re.M)


def check_log(log):
    """flintd logs one line when a request ends (its finish, its error, or "the client went away"): no request
    of ours may have two, and each one the client saw finish must have one."""
    lines = collections.defaultdict(list)
    for m in END_LINE.finditer(log):
        if m.group(1).startswith(RUN_ID + "-"):
            lines[m.group(1)].append(m.group(2))
    twice = {rid: ends for rid, ends in lines.items() if len(ends) > 1}
    missing = [rid for rid in TALLY.finished_ids if rid not in lines]
    print(f"soak: flintd's log: {sum(map(len, lines.values()))} end lines for {len(lines)} request ids; "
          f"{len(twice)} ids ended twice, {len(missing)} finished ids without an end line")
    for rid, ends in list(twice.items())[:10]:
        print(f"  {rid} ended {len(ends)} times: {ends}")
    if missing:
        print(f"  without an end line: {missing[:10]}")
    return not twice and not missing


def main():
    if ARGS.address:
        if not ARGS.pid:
            print("soak: no --pid: the RSS series is not checked")
        ok = asyncio.run(soak(ARGS.address, ARGS.http_url, ARGS.pid))
        return 0 if ok else 1
    import flintd_harness  # checks the binary and the model; --address needs neither
    log_dir = ARGS.log_dir or tempfile.mkdtemp(prefix="flint-soak-")
    os.makedirs(log_dir, exist_ok=True)
    # HTTP streams hold a thread each: room for all of them. The queue holds every stream that waits.
    d = flintd_harness.Flintd(log_dir, "--http-threads", ARGS.streams + 64, "--max-queue", ARGS.streams + 128,
                              "--kv-cache-memory", ARGS.kv_cache_memory, "--max-batched-tokens", ARGS.max_batched_tokens,
                              threads=ARGS.threads)
    print(f"soak: flintd pid {d.proc.pid}, log {d.log_path}")
    ok = False
    try:
        ok = asyncio.run(soak(d.address, d.http_url, d.proc.pid))
        if d.proc.poll() is not None:
            print(f"soak: FAILED: flintd exited with {d.proc.returncode}:\n{d.log_tail()}")
            ok = False
    finally:
        d.close()
        if d.proc.returncode not in (0, None):
            print(f"soak: flintd exited with {d.proc.returncode} on SIGTERM")
            ok = False
    if not check_log(d.log()):
        print("soak: FAILED: flintd's log does not show each request ending once")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
