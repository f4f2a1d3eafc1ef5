#!/usr/bin/env python3
"""Load generator for an OpenAI-compatible /v1/completions endpoint (stream=true),
measured the way `flint bench` measures flintd (client/bench.cpp, client/stats.cpp):

  python3 bench/llamacpp_server_bench.py --url http://127.0.0.1:8000 \
      --streams 4 --requests 16 --prompt-tokens 128 --output-tokens 64 [--seed S] [--json]

N threads each run one streaming request at a time until M requests are done. Every
request has its own prompt of exactly P tokens drawn (seeded, per request) from the
token ids of the same common-word list `flint bench` uses, and asks for exactly O
tokens at temperature 0 with the end-of-generation ids pushed down by logit_bias.

Prompts: by default (--prompt-format text) the ids are turned into text with the
server's /extras/detokenize and checked with /extras/tokenize (llama-cpp-python's
server; its /v1/completions takes text only) to tokenize back to the same P ids;
--prompt-format ids sends the id list itself (servers that accept token prompts),
and then the word list is tokenized with --tokenizer-model (llama_cpp, vocab only)
when the server has no /extras/tokenize. Everything before the clock starts.

Client-side figures, as in flint bench: TTFT from sending the request to the first
chunk carrying a token; inter-token latency as the gap between token-carrying chunks
divided by the tokens in the later chunk; end-to-end to the end of the response.
Each SSE chunk with finish_reason null counts as one token (llama-cpp-python streams
one chunk per token, except that it holds back the tokens of a split UTF-8 character
and sends them as one chunk); requests that stream a count other than O are counted
as short_outputs and the streamed text is re-tokenized afterwards as a second check.
Percentiles interpolate linearly between order statistics (numpy's default).
HTTP is the standard library only (http.client + threads).
Exits 1 when any request failed.
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

# The word list of client/bench.cpp (kWords): each word one token with its leading space.
WORDS = (
    " the of and to in is was for on that with as by at from his her are an be this which or had not "
    "but have they were one all their there been has when who will more no if out so said what up its "
    "about into than them can only other new some could time these two may then do first any my now "
    "such like our over man me even most made after also did many before must through back years where "
    "much your way well down should because each just those people how too little state good very make "
    "world still own see men work long get here between both life being under never day same another "
    "know while last might us great old year off come since against go came right used take three house "
    "water river green light music story table window city paper music garden market letter bridge "
    "mountain island summer winter morning evening yellow silver horse forest ocean engine"
)


def percentile(sorted_values, p):
    rank = min(max(p, 0.0), 100.0) / 100.0 * (len(sorted_values) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def summarize(values):
    if not values:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    v = sorted(values)
    return {"count": len(v), "mean": sum(v) / len(v), "p50": percentile(v, 50), "p90": percentile(v, 90),
            "p99": percentile(v, 99), "max": v[-1]}


class Server:
    def __init__(self, url, timeout):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http":
            raise SystemExit(f"llamacpp_server_bench: only http:// URLs ({url})")
        self.host, self.port = u.hostname, u.port or 80
        self.base = u.path.rstrip("/")
        self.timeout = timeout

    def connect(self):
        c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        c.connect()
        return c

    def post_json(self, path, body):
        c = self.connect()
        try:
            c.request("POST", self.base + path, json.dumps(body), {"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError(f"POST {path}: HTTP {r.status}: {data[:300]!r}")
            return json.loads(data)
        finally:
            c.close()

    def get_json(self, path):
        c = self.connect()
        try:
            c.request("GET", self.base + path)
            r = c.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {r.status}: {data[:300]!r}")
            return json.loads(data)
        finally:
            c.close()


class Tokenizer:
    """The server's /extras/tokenize and /extras/detokenize, or llama_cpp vocab-only."""

    def __init__(self, server, model_path):
        self.server, self.llama = server, None
        if model_path:
            from llama_cpp import Llama  # only for --tokenizer-model
            self.llama = Llama(model_path=model_path, vocab_only=True, verbose=False)

    def tokenize(self, text):
        if self.llama:
            return self.llama.tokenize(text.encode(), add_bos=False, special=False)
        return self.server.post_json("/extras/tokenize", {"input": text})["tokens"]

    def detokenize(self, ids):
        if self.llama:
            return self.llama.detokenize(ids).decode("utf-8", errors="replace")
        return self.server.post_json("/extras/detokenize", {"tokens": ids})["text"]


def make_prompts(a, pool):
    prompts = []
    for i in range(a.requests):
        rng = random.Random(a.seed * 0x9E3779B97F4A7C15 + 2 + i)
        prompts.append([rng.choice(pool) for _ in range(a.prompt_tokens)])
    return prompts


def run_one(server, conn_holder, a, i, prompt, eog_ids):
    body = {
        "prompt": prompt,
        "max_tokens": a.output_tokens,
        "temperature": a.temperature,
        "seed": a.seed + i,
        "stream": True,
        "logit_bias": {str(t): -1.0e4 for t in eog_ids},
        # llama-cpp-python's defaults add a repetition penalty (1.1); flint bench asks for none.
        "repeat_penalty": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
    }
    if a.model:
        body["model"] = a.model
    payload = json.dumps(body)
    res = {"ok": False, "error": None, "ttft_ms": 0.0, "e2e_ms": 0.0, "itl_ms": [], "tokens": 0, "text": [],
           "finish_reason": None}
    start = time.perf_counter()
    first = last = None
    try:
        if conn_holder[0] is None:
            conn_holder[0] = server.connect()
        c = conn_holder[0]
        c.request("POST", server.base + "/v1/completions", payload,
                  {"Content-Type": "application/json", "Accept": "text/event-stream"})
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
        done = False
        while True:
            line = r.readline()
            if not line:
                break
            now = time.perf_counter()
            line = line.strip()
            if not line.startswith(b"data:"):
                continue  # blank separators, ": ping" comments, event: lines
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                continue
            msg = json.loads(data)
            if "error" in msg:
                raise RuntimeError(f"server error: {msg['error']}")
            ch = msg["choices"][0]
            if ch.get("finish_reason") is not None:
                res["finish_reason"] = ch["finish_reason"]
            if ch.get("finish_reason") is None or ch.get("text"):
                # One token per chunk (see the module docstring).
                n = 1
                t_ms = (now - start) * 1000.0
                if first is None:
                    first = t_ms
                else:
                    res["itl_ms"].extend([(t_ms - last) / n] * n)
                last = t_ms
                res["tokens"] += n
                res["text"].append(ch.get("text") or "")
        res["e2e_ms"] = (time.perf_counter() - start) * 1000.0
        if r.will_close:
            c.close()
            conn_holder[0] = None
        if not done:
            raise RuntimeError("the stream ended without data: [DONE]")
        res["ttft_ms"] = first if first is not None else 0.0
        res["ok"] = True
    except Exception as e:  # noqa: BLE001 - any failure is one failed request
        res["error"] = f"{type(e).__name__}: {e}"
        res["e2e_ms"] = (time.perf_counter() - start) * 1000.0
        if conn_holder[0] is not None:
            conn_holder[0].close()
            conn_holder[0] = None
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (default %(default)s)")
    ap.add_argument("--streams", type=int, default=1, help="concurrent requests (default 1)")
    ap.add_argument("--requests", type=int, default=16, help="requests in all (default 16)")
    ap.add_argument("--prompt-tokens", type=int, default=128, help="prompt length in tokens (default 128)")
    ap.add_argument("--output-tokens", type=int, default=64, help="tokens generated per request (default 64)")
    ap.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy)")
    ap.add_argument("--seed", type=int, default=None, help="seeds the prompts (default: random)")
    ap.add_argument("--eog-ids", default="0,2,4",
                    help="end-of-generation ids to suppress with logit_bias (default %(default)s: "
                         "SmolLM2's <|endoftext|>, <|im_end|>, <reponame>)")
    ap.add_argument("--prompt-format", choices=("text", "ids"), default="text")
    ap.add_argument("--tokenizer-model", help="GGUF to tokenize with locally (llama_cpp, vocab only) "
                                              "instead of the server's /extras endpoints")
    ap.add_argument("--model", help="the request's model field (default: none sent)")
    ap.add_argument("--timeout", type=float, default=600.0, help="socket timeout, seconds (default 600)")
    ap.add_argument("--engine", default="llama-cpp-python server", help="label for the report")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().getrandbits(63)
    eog_ids = [int(t) for t in a.eog_ids.split(",") if t.strip()]
    server = Server(a.url, a.timeout)
    tok = Tokenizer(server, a.tokenizer_model)

    # The word pool: distinct ids of the word list, as flint bench builds it.
    pool = list(dict.fromkeys(tok.tokenize(WORDS)))
    if not pool:
        raise SystemExit("llamacpp_server_bench: the word list tokenized to nothing")
    ids = make_prompts(a, pool)
    if a.prompt_format == "text":
        prompts = []
        for p in ids:
            text = tok.detokenize(p)
            back = tok.tokenize(text)
            if back != p:
                raise SystemExit(f"llamacpp_server_bench: a prompt's text tokenizes to {len(back)} tokens, "
                                 f"not the {len(p)} it was made of; use --prompt-format ids")
            prompts.append(text)
    else:
        prompts = ids

    results = [None] * a.requests
    next_i = [0]
    lock = threading.Lock()
    n_threads = min(a.streams, a.requests)
    conns = [[server.connect()] for _ in range(n_threads)]  # connected before the clock, like flint's channel

    def worker(holder):
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= a.requests:
                return
            results[i] = run_one(server, holder, a, i, prompts[i], eog_ids)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(conns[t],)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall_s = time.perf_counter() - t0
    for h in conns:
        if h[0] is not None:
            h[0].close()

    ok = [r for r in results if r["ok"]]
    failed = [r for r in results if not r["ok"]]
    ttft = [r["ttft_ms"] for r in ok]
    e2e = [r["e2e_ms"] for r in ok]
    itl = [x for r in ok for x in r["itl_ms"]]
    completion_tokens = sum(r["tokens"] for r in ok)
    prompt_tokens = a.prompt_tokens * len(ok)
    short = sum(r["tokens"] != a.output_tokens for r in ok)
    # Second check, after the clock: the streamed text re-tokenized (may differ where
    # the model produced a non-canonical split; reported, not used in the figures).
    retok_mismatch = 0
    try:
        for r in ok:
            retok_mismatch += len(tok.tokenize("".join(r["text"]))) != a.output_tokens
    except Exception:  # noqa: BLE001 - the check is optional
        retok_mismatch = None
    finish = sorted({str(r["finish_reason"]) for r in ok})
    out = {
        "engine": a.engine,
        "server": a.url,
        "streams": a.streams,
        "requests": a.requests,
        "prompt_tokens": a.prompt_tokens,
        "output_tokens": a.output_tokens,
        "seed": a.seed,
        "completed": len(ok),
        "errors": len(failed),
        "short_outputs": short,
        "streamed_tokens": completion_tokens,
        "retokenized_mismatches": retok_mismatch,
        "finish_reasons": finish,
        "wall_s": wall_s,
        "requests_per_s": len(ok) / wall_s,
        "output_tokens_per_s": completion_tokens / wall_s,
        "total_tokens_per_s": (prompt_tokens + completion_tokens) / wall_s,
        "mean_prompt_tokens": a.prompt_tokens if ok else 0.0,
        "ttft_ms": summarize(ttft),
        "itl_ms": summarize(itl),
        "e2e_ms": summarize(e2e),
    }
    if failed:
        out["first_error"] = failed[0]["error"]
    if a.json:
        print(json.dumps(out))
    else:
        print(f"bench: {a.engine} at {a.url}, /v1/completions ({a.prompt_format} prompts), {a.streams} streams, "
              f"{a.requests} requests, prompt {a.prompt_tokens} tokens, output {a.output_tokens} tokens, "
              f"seed {a.seed}")
        rows = [("wall time (s)", f"{wall_s:.2f}"), ("completed", len(ok)), ("errors", len(failed)),
                ("requests/s", f"{out['requests_per_s']:.2f}"),
                ("output tokens/s", f"{out['output_tokens_per_s']:.2f}"),
                ("total tokens/s", f"{out['total_tokens_per_s']:.2f}"),
                ("streamed tokens", f"{completion_tokens} ({short} requests not exactly {a.output_tokens}; "
                                    f"finish {', '.join(finish)})")]
        for k, v in rows:
            print(f"  {k:<22}{v}")
        for name, key in (("TTFT (ms)", "ttft_ms"), ("inter-token (ms)", "itl_ms"), ("end-to-end (ms)", "e2e_ms")):
            s = out[key]
            print(f"  {name:<22}p50 {s['p50']:9.2f}  p99 {s['p99']:9.2f}  mean {s['mean']:9.2f}")
    if short:
        print(f"llamacpp_server_bench: {short} requests did not stream exactly {a.output_tokens} tokens",
              file=sys.stderr)
    if failed:
        print(f"llamacpp_server_bench: {failed[0]['error']} ({len(failed)} of {a.requests} requests failed; "
              f"this was the first)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
