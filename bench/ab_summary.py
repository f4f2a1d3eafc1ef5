#!/usr/bin/env python3
"""ab_summary: one line per A/B of a device check, from the JSONs that compare_kernel_runs.py and
compare_engine_runs.py write (gpu-check.sh's *_gain steps): how many rows, the geometric mean of their speedups (A
over B, above 1: A faster), the slowest and the fastest row, and how many rows A wins or loses by more than 1%.
gpu-check prints it last, so one table says which candidate paid, even when the output that comes back is cut.

Usage: ab_summary.py GAIN.json [GAIN.json ...]   (a missing or unreadable file is a line saying so)
Exit 0 with at least one A/B read, 1 with none."""
import json
import math
import os
import sys


def row_name(r):
    """A short name for a row of either script: model and matrix/mode and M/batch/context, or model and batch."""
    parts = [str(r[k]) for k in ("model", "matrix", "mode") if k in r]
    for k, tag in (("M", "M="), ("batch", "b"), ("ctx", "x"), ("tokens", "prefill ")):
        if k in r:
            parts.append(f"{tag}{r[k]}")
    return " ".join(parts) or "?"


def summarize(path):
    name = os.path.basename(path)
    name = name[:-5] if name.endswith(".json") else name
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        return name, None, f"unreadable ({e.__class__.__name__})"
    labels = doc.get("labels") or ["a", "b"]
    rows = [r for r in doc.get("rows", []) + doc.get("prefill", [])
            if isinstance(r.get("speedup"), (int, float)) and r["speedup"] > 0 and math.isfinite(r["speedup"])]
    if not rows:
        return name, None, "no rows with a speedup"
    logs = [math.log(r["speedup"]) for r in rows]
    lo = min(rows, key=lambda r: r["speedup"])
    hi = max(rows, key=lambda r: r["speedup"])
    return name, {
        "labels": labels,
        "rows": len(rows),
        "geomean": math.exp(sum(logs) / len(logs)),
        "min": lo["speedup"], "min_row": row_name(lo),
        "max": hi["speedup"], "max_row": row_name(hi),
        "wins": sum(r["speedup"] > 1.01 for r in rows),
        "losses": sum(r["speedup"] < 0.99 for r in rows),
    }, ""


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 1
    print("## summary A/B (speedup = A over B, above 1: A faster; wins / losses: rows beyond 1%)")
    print(f"{'A/B':<26} {'A vs B':<22} {'rows':>4} {'geomean':>8} {'wins':>5} {'losses':>6}  slowest; fastest")
    read = 0
    for path in argv:
        name, s, why = summarize(path)
        if s is None:
            print(f"{name:<26} {why}")
            continue
        read += 1
        vs = f"{s['labels'][0]} vs {s['labels'][1]}"
        print(f"{name:<26} {vs:<22} {s['rows']:>4} {s['geomean']:>8.3f} {s['wins']:>5} {s['losses']:>6}  "
              f"{s['min']:.3f} ({s['min_row']}); {s['max']:.3f} ({s['max_row']})")
    return 0 if read else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
