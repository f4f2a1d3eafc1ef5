#!/usr/bin/env python3
"""bench/compare_attention_runs.py on a recorded A/B (docs/baselines/h200-2026-11-27-run5.json: the staged decode
kernel against the plain one, one H200 run): the speedups it prints are B's µs over A's for the same shape, its
summary counts agree with its rows, its JSON holds every shape of both runs, and a missing input or two runs with
no shape in common exit 1. Usage: compare_attention_runs_test.py SCRIPT RUN5_JSON"""
import json
import os
import subprocess
import sys
import tempfile


def run(script, *args):
    p = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def main():
    script, recorded = sys.argv[1], sys.argv[2]
    with open(recorded) as f:
        doc = json.load(f)
    with tempfile.TemporaryDirectory() as d:
        a, b, out = os.path.join(d, "staged.json"), os.path.join(d, "plain.json"), os.path.join(d, "cmp.json")
        json.dump(doc["attention_bench_staged"], open(a, "w"))
        json.dump(doc["attention_bench"], open(b, "w"))
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
    print("compare_attention_runs: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
