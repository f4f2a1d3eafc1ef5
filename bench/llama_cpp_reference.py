#!/usr/bin/env python3
"""llama.cpp (PyPI's llama-cpp-python) on the same GGUF, measured the way
bench/cpu_model_bench.cpp measures Flint: prefill of N prompt tokens in one
eval, then N decode steps of one token each, greedy; median of several runs.

  python3 bench/llama_cpp_reference.py -m MODEL [-t THREADS] [--prompt N] [--decode N] [--runs R] [--json PATH]
"""
import argparse
import json
import os
import statistics
import time

from llama_cpp import Llama


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", required=True)
    ap.add_argument("-t", type=int, default=os.cpu_count())
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    llm = Llama(model_path=a.m, n_threads=a.t, n_threads_batch=a.t, n_ctx=a.prompt + a.decode + 16,
                n_batch=512, verbose=False)
    vocab = llm.n_vocab()
    # The same prompt ids as cpu_model_bench.
    prompt = [(i * 2654435761 + 17) % vocab for i in range(a.prompt)]
    prefill, decode = [], []
    for r in range(a.runs + 1):  # run 0 warms up
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        for _ in range(a.decode):
            nxt = int(llm.scores[llm.n_tokens - 1].argmax())
            llm.eval([nxt])
        t2 = time.perf_counter()
        if r:
            prefill.append(t1 - t0)
            decode.append(t2 - t1)
    res = {"engine": "llama.cpp", "model": a.m, "threads": a.t, "prompt_tokens": a.prompt,
           "decode_tokens": a.decode, "prefill_tok_s": a.prompt / statistics.median(prefill),
           "decode_tok_s": a.decode / statistics.median(decode)}
    print(f"llama.cpp: threads {a.t}, prefill {res['prefill_tok_s']:.1f} tok/s, decode {res['decode_tok_s']:.1f} tok/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main()
