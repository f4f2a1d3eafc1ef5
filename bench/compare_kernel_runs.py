#!/usr/bin/env python3
"""Two attention_bench or two matmul_bench JSONs of the same shapes side by side (an A/B of two kernels, one
binary, one card, one gpu-check run): median µs per shape, and the speedup of A over B (B's µs / A's µs).
attention_bench: per (model, mode, batch, ctx), GB/s and % of each run's copy ceiling for decode, TFLOP/s for
prefill; the summary adds the range of speedups at decode context >= 4096 and issue 5's decode target (>= 80% of
copy at context >= 4096) met per run. matmul_bench: per (model, matrix, M), TFLOP/s and each run's time against
cuBLASLt's in the same run. Both summaries count the shapes where A is faster or slower by more than 2%. Exits 1
when an input is missing, is neither kind, or no shape is in both; a slower A is a measured result, not a failure.

    python3 bench/compare_kernel_runs.py A.json B.json [--labels A,B] [--json OUT]
"""
import argparse
import json
import sys


def shapes(path):
    """(kind, {key: row}) of one JSON: attention_bench rows keyed (model, mode, batch, ctx), the shapes that ran;
    matmul_bench rows keyed (model, matrix, M), given a uniform "us_median"."""
    with open(path) as f:
        doc = json.load(f)
    rows = doc.get("shapes", [])
    if rows and "matrix" in rows[0]:
        out = {}
        for r in rows:
            if r.get("flint_us"):
                out[(r["model"], r["matrix"], r["M"])] = dict(r, us_median=r["flint_us"])
        return "matmul", out
    return "attention", {(r["model"], r["mode"], r["batch"], r["ctx"]): r for r in rows
                         if r.get("ran") and r.get("us_median")}


def print_matmul(la, lb, ra, rb, common):
    print(f"## matmul A/B: {la} (A) vs {lb} (B), median µs; speedup = B µs / A µs; xcub = cuBLASLt µs / ours")
    print(f"{'model':<14}{'matrix':>9}{'M':>6}{'us ' + la:>14}{'us ' + lb:>14}{'TF ' + la:>10}{'TF ' + lb:>10}"
          f"{'xcub ' + la:>11}{'xcub ' + lb:>11}{'speedup':>9}")
    rows = []
    for key in common:
        a, b = ra[key], rb[key]
        speedup = b["us_median"] / a["us_median"]
        print(f"{key[0]:<14}{key[1]:>9}{key[2]:>6}{a['us_median']:>14.2f}{b['us_median']:>14.2f}"
              f"{a.get('tflops', 0):>10.1f}{b.get('tflops', 0):>10.1f}{a.get('cublas_over_flint', 0):>11.2f}"
              f"{b.get('cublas_over_flint', 0):>11.2f}{speedup:>9.3f}")
        rows.append({"model": key[0], "matrix": key[1], "M": key[2], la + "_us": a["us_median"],
                     lb + "_us": b["us_median"], la + "_vs_cublas": a.get("cublas_over_flint"),
                     lb + "_vs_cublas": b.get("cublas_over_flint"), "speedup": speedup})
    return rows


def print_attention(la, lb, ra, rb, common):
    print(f"## attention A/B: {la} (A) vs {lb} (B), median µs; speedup = B µs / A µs")
    print(f"{'model':<14}{'mode':>8}{'batch':>6}{'ctx':>7}{'us ' + la:>14}{'us ' + lb:>14}"
          f"{'GB/s|TF ' + la:>16}{'GB/s|TF ' + lb:>16}{'%copy ' + la:>12}{'%copy ' + lb:>12}{'speedup':>9}")
    rows = []
    for key in common:
        a, b = ra[key], rb[key]
        speedup = b["us_median"] / a["us_median"]
        decode = key[1] == "decode"
        fig = "gbps" if decode else "tflops"
        pa, pb = (a.get("pct_copy"), b.get("pct_copy")) if decode else (None, None)
        print(f"{key[0]:<14}{key[1]:>8}{key[2]:>6}{key[3]:>7}{a['us_median']:>14.2f}{b['us_median']:>14.2f}"
              f"{a.get(fig, 0):>16.1f}{b.get(fig, 0):>16.1f}"
              f"{(f'{pa:.1f}' if pa is not None else '-'):>12}{(f'{pb:.1f}' if pb is not None else '-'):>12}"
              f"{speedup:>9.3f}")
        rows.append({"model": key[0], "mode": key[1], "batch": key[2], "ctx": key[3],
                     la + "_us": a["us_median"], lb + "_us": b["us_median"], la + "_" + fig: a.get(fig),
                     lb + "_" + fig: b.get(fig), la + "_pct_copy": pa, lb + "_pct_copy": pb, "speedup": speedup,
                     la + "_target_met": a.get("target_met"), lb + "_target_met": b.get("target_met")})
    return rows


def summarise_attention(la, lb, rows):
    """The decode speedups at context >= 4096 and issue 5's decode target per run."""
    long_decode = [r["speedup"] for r in rows if r["mode"] == "decode" and r["ctx"] >= 4096]
    targets = [r for r in rows if r.get(la + "_target_met") is not None]
    met_a = sum(bool(r[la + "_target_met"]) for r in targets)
    met_b = sum(bool(r[lb + "_target_met"]) for r in targets)
    if long_decode:
        print(f"decode at ctx >= 4096: speedup {min(long_decode):.3f} .. {max(long_decode):.3f} "
              f"over {len(long_decode)} shapes")
    if targets:
        print(f"decode target (>= 80% of copy, ctx >= 4096): {la} {met_a}/{len(targets)}, "
              f"{lb} {met_b}/{len(targets)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--labels", default="a,b")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    la, lb = (args.labels.split(",") + ["b"])[:2]
    try:
        (ka, ra), (kb, rb) = shapes(args.a), shapes(args.b)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"compare_kernel_runs: cannot read an attention_bench or matmul_bench JSON: {e}")
        return 1
    if ka != kb:
        print(f"compare_kernel_runs: {args.a} is {ka}_bench's, {args.b} is {kb}_bench's")
        return 1
    common = sorted(set(ra) & set(rb), key=lambda k: (k[1], k[0], k[2], k[3]) if ka == "attention" else k)
    if not common:
        print(f"compare_kernel_runs: no shape ran in both {args.a} and {args.b}")
        return 1
    rows = (print_matmul if ka == "matmul" else print_attention)(la, lb, ra, rb, common)
    faster = sum(r["speedup"] > 1.02 for r in rows)
    slower = sum(r["speedup"] < 0.98 for r in rows)
    print(f"\n## summary compare_kernel_runs ({ka}) {la} vs {lb}")
    print(f"shapes in both: {len(rows)}; {la} faster by > 2%: {faster}; slower by > 2%: {slower}; "
          f"within 2%: {len(rows) - faster - slower}")
    if ka == "attention":
        summarise_attention(la, lb, rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"kind": ka, "labels": [la, lb], "faster": faster, "slower": slower, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
