#!/usr/bin/env python3
"""Two engine_bench JSONs of the same shapes side by side: decode tok/s and forward ms per (model, batch), prefill
tok/s per (model, tokens), and the ratios. gpu-check.sh uses it for its A/Bs (FLINT_PDL=off, FLINT_MATMUL=hybrid,
the tensor-core attention kernels).
Usage: compare_engine_runs.py A.json B.json [--labels A,B] [--json OUT]"""
import argparse
import json
import sys


def decode_rows(path):
    with open(path) as f:
        doc = json.load(f)
    rows = {}
    for m in doc.get("models", []):
        for d in m.get("decode", []):
            rows[(m["model"], d["batch"])] = d
    return doc, rows


def prefill_rows(doc):
    """(model, tokens) -> prefill row, the rows that ran (a failed length has an error and no tok_s)."""
    return {(m["model"], p["tokens"]): p for m in doc.get("models", []) for p in m.get("prefill", [])
            if p.get("tok_s")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--labels", default="a,b")
    ap.add_argument("--json")
    args = ap.parse_args()
    la, lb = (args.labels.split(",") + ["b"])[:2]
    da, ra = decode_rows(args.a)
    db, rb = decode_rows(args.b)
    common = sorted(set(ra) & set(rb))
    if not common:
        print(f"compare_engine_runs: no (model, batch) decode row in both {args.a} and {args.b}")
        return 1
    print(f"## summary decode, {la} vs {lb} (same binary, same machine, one run each)")
    print(f"{'model':<16}{'batch':>6}{'tok/s ' + la:>16}{'tok/s ' + lb:>16}{'fwd_ms ' + la:>16}{'fwd_ms ' + lb:>16}{'speedup':>9}")
    out = []
    for key in common:
        a, b = ra[key], rb[key]
        speedup = a["tok_s"] / b["tok_s"] if b["tok_s"] > 0 else float("nan")
        print(f"{key[0]:<16}{key[1]:>6}{a['tok_s']:>16.1f}{b['tok_s']:>16.1f}{a['forward_ms']:>16.3f}"
              f"{b['forward_ms']:>16.3f}{speedup:>9.3f}")
        out.append({"model": key[0], "batch": key[1], la + "_tok_s": a["tok_s"], lb + "_tok_s": b["tok_s"],
                    la + "_forward_ms": a["forward_ms"], lb + "_forward_ms": b["forward_ms"], "speedup": speedup})
    pa, pb = prefill_rows(da), prefill_rows(db)
    prefill = []
    if set(pa) & set(pb):
        print(f"## prefill, {la} vs {lb}")
        print(f"{'model':<16}{'tokens':>7}{'tok/s ' + la:>16}{'tok/s ' + lb:>16}{'speedup':>9}")
        for key in sorted(set(pa) & set(pb)):
            speedup = pa[key]["tok_s"] / pb[key]["tok_s"]
            print(f"{key[0]:<16}{key[1]:>7}{pa[key]['tok_s']:>16.1f}{pb[key]['tok_s']:>16.1f}{speedup:>9.3f}")
            prefill.append({"model": key[0], "tokens": key[1], la + "_tok_s": pa[key]["tok_s"],
                            lb + "_tok_s": pb[key]["tok_s"], "speedup": speedup})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"labels": [la, lb], "rows": out, "prefill": prefill}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
