#!/usr/bin/env python3
"""attention_vs_torch: Flint's paged attention beside torch SDPA on the same shapes, from the JSON that
attention_bench and torch_baselines.py wrote in the same scripts/gpu-check.sh run (same card, minutes apart).

Prefill: issue 5's target is Flint's TFLOP/s >= 1.0x torch's (causal, batch 1, same heads, same L): PASS/MISS per
shape. Decode: Flint's and torch's GB/s side by side (both count K + V + q + out once); its target (>= 80% of the copy
ceiling at context >= 4096) is judged by attention_bench itself and repeated here. Exits 1 only when an input is
missing or unreadable: a MISS is a measured result, not a failure of this step.

    python3 bench/attention_vs_torch.py ATTENTION_JSON TORCH_JSON [--json OUT]
"""
import json
import sys

import side_by_side
from side_by_side import fmt


def main():
    read = side_by_side.inputs(__doc__, "attention_vs_torch", "attention_json", "attention_bench")
    if read is None:
        return 1
    args, flint, torch = read

    torch_prefill = {(r["model"], r["L"]): r for r in torch.get("prefill", [])}
    torch_decode = {(r["model"], r["batch"], r["ctx"]): r for r in torch.get("decode", [])}
    prefill, decode = [], []
    for r in flint.get("shapes", []):
        if r["mode"] == "prefill":
            t = torch_prefill.get((r["model"], r["ctx"]), {})
            row = dict(model=r["model"], L=r["ctx"], flint_tflops=r.get("tflops"), torch_tflops=t.get("tflops"))
            if row["flint_tflops"] and row["torch_tflops"]:
                row["ratio"] = row["flint_tflops"] / row["torch_tflops"]
                row["target_met"] = row["ratio"] >= 1.0
            row["note"] = r.get("skipped") or t.get("error") or ("" if t else "no torch figure")
            prefill.append(row)
        else:
            t = torch_decode.get((r["model"], r["batch"], r["ctx"]), {})
            row = dict(model=r["model"], batch=r["batch"], ctx=r["ctx"], flint_gbps=r.get("gbps"),
                       flint_pct_copy=r.get("pct_copy"), torch_gbps=t.get("gbps"), target_met=r.get("target_met"))
            if row["flint_gbps"] and row["torch_gbps"]:
                row["ratio"] = row["flint_gbps"] / row["torch_gbps"]
            row["note"] = r.get("skipped") or t.get("skipped") or t.get("error") or ("" if t else "no torch figure")
            decode.append(row)

    card = flint.get("card", {}).get("name", "?")
    print("\n## summary attention_vs_torch")
    print(f"{card}: Flint attention_bench vs torch {torch.get('info', {}).get('torch', '?')} SDPA, same run")
    print("prefill (causal, batch 1): target Flint >= 1.0x torch TFLOP/s")
    print(f"{'model':13} {'L':>6} {'flint':>8} {'torch':>8} {'ratio':>6} result")
    for r in prefill:
        result = "-" if "target_met" not in r else ("PASS" if r["target_met"] else "MISS")
        print(f"{r['model']:13} {r['L']:6d} {fmt(r['flint_tflops'], '8.1f')} {fmt(r['torch_tflops'], '8.1f')} "
              f"{fmt(r.get('ratio'), '6.2f')} {result} {r['note']}")
    print("decode (1 query token): GB/s; target (attention_bench's) >= 80% of the copy ceiling at context >= 4096")
    print(f"{'model':13} {'batch':>5} {'ctx':>6} {'flint':>7} {'%copy':>5} {'torch':>7} {'ratio':>6} result")
    for r in decode:
        result = "-" if r["target_met"] is None else ("PASS" if r["target_met"] else "MISS")
        print(f"{r['model']:13} {r['batch']:5d} {r['ctx']:6d} {fmt(r['flint_gbps'], '7.0f')} "
              f"{fmt(r['flint_pct_copy'], '5.0f')} {fmt(r['torch_gbps'], '7.0f')} {fmt(r.get('ratio'), '6.2f')} "
              f"{result} {r['note']}")
    judged_p = [r for r in prefill if "target_met" in r]
    judged_d = [r for r in decode if r["target_met"] is not None]
    print(f"targets met: prefill {sum(r['target_met'] for r in judged_p)}/{len(judged_p)} (of {len(prefill)} shapes), "
          f"decode {sum(r['target_met'] for r in judged_d)}/{len(judged_d)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(card=card, prefill=prefill, decode=decode), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
