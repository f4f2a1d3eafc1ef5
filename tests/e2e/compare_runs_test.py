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
import math
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
    check_ab_summary(bench, run3, recorded, run8)
    print("compare_kernel_runs, compare_engine_runs, ab_summary: ok")
    return 0


def check_ab_summary(bench, run3, run5, run8):
    """bench/ab_summary.py on the three recorded A/Bs' comparison JSONs: a line each with its row count, the
    geometric mean of the rows' speedups, the slowest and fastest rows and the wins and losses beyond 1%; an
    unreadable file is a line saying so, and with nothing readable it exits 1."""
    kernel, engine = os.path.join(bench, "compare_kernel_runs.py"), os.path.join(bench, "compare_engine_runs.py")
    with tempfile.TemporaryDirectory() as d:
        gains = []
        for script, run_json, a_key, b_key, labels, name in (
                (kernel, run5, "attention_bench_staged", "attention_bench", "staged,plain", "staged_gain"),
                (kernel, run3, "matmul_bench", "matmul_bench_unroll4", "steps8,steps4", "unroll_gain"),
                (engine, run8, "engine_bench_hybrid", "engine_bench", "hybrid,flint", "hybrid_gain")):
            with open(run_json) as f:
                doc = json.load(f)
            a, b, _ = split_run(doc, d, a_key, b_key)
            out = os.path.join(d, name + ".json")
            rc, text = run(script, a, b, "--labels", labels, "--json", out)
            assert rc == 0, text
            gains.append(out)
        rc, text = run(os.path.join(bench, "ab_summary.py"), *gains, os.path.join(d, "missing_gain.json"))
        assert rc == 0, text
        lines = {l.split()[0]: l for l in text.splitlines() if l and not l.startswith(("#", "A/B"))}
        for out in gains:
            name = os.path.basename(out)[:-5]
            doc = json.load(open(out))
            rows = doc["rows"] + doc.get("prefill", [])
            speedups = [r["speedup"] for r in rows]
            geomean = math.exp(sum(math.log(x) for x in speedups) / len(speedups))
            fields = lines[name].split()
            assert int(fields[4]) == len(rows), (lines[name], len(rows))
            assert abs(float(fields[5]) - geomean) < 6e-4, (lines[name], geomean)
            assert int(fields[6]) == sum(x > 1.01 for x in speedups) and int(fields[7]) == sum(x < 0.99 for x in speedups)
            assert f"{min(speedups):.3f} (" in lines[name] and f"{max(speedups):.3f} (" in lines[name], lines[name]
        # run 8: hybrid's fastest row is Qwen2.5-7B's prefill at 512 tokens (3.83x; docs/perf.md)
        fastest = lines["hybrid_gain"].split(";")[1]
        assert "hybrid vs flint" in lines["hybrid_gain"] and "qwen2.5-7b prefill 512" in fastest, lines["hybrid_gain"]
        assert "missing_gain" in lines and "unreadable" in lines["missing_gain"], text
        rc, text = run(os.path.join(bench, "ab_summary.py"), os.path.join(d, "missing_gain.json"))
        assert rc == 1 and "unreadable" in text, text


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
