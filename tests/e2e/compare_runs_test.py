#!/usr/bin/env python3
"""The A/B scripts gpu-check.sh runs, on A/Bs recorded on the H200.
bench/compare_kernel_runs.py on run 5's attention A/B (docs/baselines/h200-2026-11-27-run5.json: the staged decode
kernel against the plain one): the speedups it prints are B's µs over A's for the same shape, its summary counts
agree with its rows, its JSON holds every shape of both runs, and a missing input, a file that is not JSON, two
runs with no shape in common, or an attention run against a matmul one exit 1. The same on run 3's matmul A/B
(8-step against 4-step decode chunks). bench/compare_engine_runs.py on run 8's (FLINT_MATMUL=hybrid against the
default): decode and prefill rows with their speedups.
Usage: compare_runs_test.py BENCH_DIR RUN3_JSON RUN5_JSON RUN8_JSON"""
import json
import os
import subprocess
import sys
import tempfile


def run(script, *args):
    p = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def split_run(doc, d, key_a, key_b):
    """Writes two steps of a recorded run to files in d: (A path, B path, a path for the comparison's JSON)."""
    a, b = os.path.join(d, key_a + ".json"), os.path.join(d, key_b + ".json")
    json.dump(doc[key_a], open(a, "w"))
    json.dump(doc[key_b], open(b, "w"))
    return a, b, os.path.join(d, "cmp.json")


def main():
    bench, run3, recorded, run8 = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    script = os.path.join(bench, "compare_kernel_runs.py")
    with open(recorded) as f:
        doc = json.load(f)
    with tempfile.TemporaryDirectory() as d:
        a, b, out = split_run(doc, d, "attention_bench_staged", "attention_bench")
        rc, text = run(script, a, b, "--labels", "staged,plain", "--json", out)
        assert rc == 0, text
        res = json.load(open(out))
        rows = {(r["model"], r["mode"], r["batch"], r["ctx"]): r for r in res["rows"]}
        assert len(rows) == 45, len(rows)  # 36 decode + 9 prefill shapes ran in both steps
        # run 5, Qwen2.5-1.5B heads, batch 1 x 4096: staged 21.9 µs, plain 25.2 µs (docs/perf.md)
        r = rows[("Qwen2.5-1.5B", "decode", 1, 4096)]
        assert abs(r["staged_us"] - 21.9) < 0.05 and abs(r["plain_us"] - 25.2) < 0.05, r
        assert abs(r["speedup"] - r["plain_us"] / r["staged_us"]) < 1e-12, r
        assert res["faster"] == sum(x["speedup"] > 1.02 for x in res["rows"])
        assert res["slower"] == sum(x["speedup"] < 0.98 for x in res["rows"])
        assert "staged 0/24, plain 0/24" in text, text
        # A against itself: every speedup 1, nothing faster or slower.
        rc, text = run(script, b, b, "--json", out)
        assert rc == 0 and json.load(open(out))["faster"] == 0 and json.load(open(out))["slower"] == 0, text
        # Broken inputs: a missing file, a file that is not JSON, two runs with no shape in common.
        rc, text = run(script, os.path.join(d, "missing.json"), b)
        assert rc == 1 and "cannot read" in text, text
        bad = os.path.join(d, "bad.json")
        open(bad, "w").write("{not json")
        rc, text = run(script, bad, b)
        assert rc == 1 and "cannot read" in text, text
        empty = os.path.join(d, "empty.json")
        json.dump({"shapes": []}, open(empty, "w"))
        rc, text = run(script, empty, b)
        assert rc == 1 and "no shape ran in both" in text, text
    check_matmul_runs(script, run3, recorded)
    check_engine_runs(os.path.join(bench, "compare_engine_runs.py"), run8)
    print("compare_kernel_runs, compare_engine_runs: ok")
    return 0


def check_matmul_runs(script, run3, run5):
    with open(run3) as f:
        doc = json.load(f)
    with tempfile.TemporaryDirectory() as d:
        a, b, out = split_run(doc, d, "matmul_bench", "matmul_bench_unroll4")
        rc, text = run(script, a, b, "--labels", "steps8,steps4", "--json", out)
        assert rc == 0, text
        res = json.load(open(out))
        assert res["kind"] == "matmul" and len(res["rows"]) == 120, (res["kind"], len(res["rows"]))
        rows = {(r["model"], r["matrix"], r["M"]): r for r in res["rows"]}
        # run 3 (docs/perf.md): Llama-3.2-1B gate+up at M = 8, 31.7 µs with 8-step chunks, 23.5 with 4
        r = rows[("Llama-3.2-1B", "gate_up", 8)]
        assert abs(r["steps8_us"] - 31.7) < 0.05 and abs(r["steps4_us"] - 23.5) < 0.05, r
        assert abs(r["speedup"] - r["steps4_us"] / r["steps8_us"]) < 1e-12, r
        assert "## summary compare_kernel_runs (matmul)" in text, text
        # An attention run against a matmul one is refused.
        att = os.path.join(d, "attention.json")
        json.dump(json.load(open(run5))["attention_bench"], open(att, "w"))
        rc, text = run(script, a, att)
        assert rc == 1 and "matmul_bench's" in text and "attention_bench's" in text, text


def check_engine_runs(script, recorded):
    with open(recorded) as f:
        doc = json.load(f)
    with tempfile.TemporaryDirectory() as d:
        a, b, out = split_run(doc, d, "engine_bench_hybrid", "engine_bench")
        rc, text = run(script, a, b, "--labels", "hybrid,flint", "--json", out)
        assert rc == 0, text
        res = json.load(open(out))
        dec = {(r["model"], r["batch"]): r for r in res["rows"]}
        pre = {(r["model"], r["tokens"]): r for r in res["prefill"]}
        # run 8 (docs/perf.md): Llama-3.2-1B batch 128, 59059 against 30490 tok/s; prefill 512, 148907 against 52077
        r = dec[("llama-3.2-1b", 128)]
        assert round(r["hybrid_tok_s"]) == 59059 and round(r["flint_tok_s"]) == 30490, r
        assert abs(r["speedup"] - r["hybrid_tok_s"] / r["flint_tok_s"]) < 1e-12, r
        r = pre[("llama-3.2-1b", 512)]
        assert round(r["hybrid_tok_s"]) == 148907 and abs(r["speedup"] - 2.859) < 0.001, r
        assert len(pre) == 6 and len(dec) == 9, (len(pre), len(dec))
        assert "## prefill, hybrid vs flint" in text, text


if __name__ == "__main__":
    sys.exit(main())
