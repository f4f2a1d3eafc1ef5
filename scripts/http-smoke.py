#!/usr/bin/env python3
"""http-smoke.py: a running flintd answers over its OpenAI-compatible HTTP API, with the standard library only
(the GPU machine has no grpcio). Waits for GET /health, then sends one greedy completion alone and the same
request from N threads at once (the steps then batch, and on CUDA replay the decode graphs of larger buckets);
every answer must be non-empty and, greedy and batch invariant, identical to the lone one. Exit 0 when all hold.

    scripts/http-smoke.py --port 18431 [--concurrency 8] [--max-tokens 24] [--wait 120] [--pid PID]
"""
import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request


def get(url, timeout):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def complete(base, prompt, max_tokens, timeout):
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
    req = urllib.request.Request(base + "/v1/completions", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = json.loads(r.read())
    return out["choices"][0]["text"], out.get("usage", {})


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by the shell that started it) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--wait", type=float, default=120, help="seconds to wait for /health")
    p.add_argument("--prompt", default="The capital of France is")
    p.add_argument("--pid", type=int, default=0, help="flintd's pid: stop waiting when it has exited")
    a = p.parse_args()
    base = f"http://{a.host}:{a.port}"
    t0 = time.time()
    while True:
        try:
            if get(base + "/health", 2)[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if a.pid and not alive(a.pid):
            print(f"http-smoke: flintd (pid {a.pid}) exited before it was healthy")
            return 1
        if time.time() - t0 > a.wait:
            print(f"http-smoke: no healthy flintd at {base} after {a.wait:.0f} s")
            return 1
        time.sleep(0.5)
    print(f"http-smoke: healthy after {time.time() - t0:.1f} s")
    alone, usage = complete(base, a.prompt, a.max_tokens, 120)
    print(f"alone: {alone!r} ({usage})")
    results, errors = [None] * a.concurrency, []

    def worker(i):
        try:
            results[i] = complete(base, a.prompt, a.max_tokens, 300)[0]
        except Exception as e:  # reported below, with which request failed
            errors.append(f"request {i}: {e}")

    t1 = time.time()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{a.concurrency} at once in {time.time() - t1:.2f} s")
    ok = not errors and bool(alone)
    for e in errors:
        print("FAIL", e)
    for i, r in enumerate(results):
        if r != alone:
            ok = False
            print(f"FAIL request {i} differs from the lone answer: {r!r}")
    print("## summary http smoke")
    print(f"{'PASS' if ok else 'FAIL'}: lone answer {len(alone)} chars; {a.concurrency} concurrent answers "
          f"{'identical to it' if ok else 'NOT all identical / failed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
