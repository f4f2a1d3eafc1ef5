#!/usr/bin/env python3
"""ncu_summary: one line per profiled kernel from Nsight Compute's raw CSV (`ncu --import R --csv --page raw`).

scripts/ncu-kernels.sh profiles a few matmul and attention shapes (the benches' --only) and feeds their CSV here,
so that a device run says *why* a kernel is where it is: how much of its time the DRAM is busy, how full the SMs
are, what its warps wait on. Columns:

  us       gpu__time_duration.sum (one replay of the kernel; caches flushed first, clocks as they were)
  MB       dram__bytes_read.sum
  dram%    dram__throughput.avg.pct_of_peak_sustained_elapsed
  sm%      sm__throughput.avg.pct_of_peak_sustained_elapsed
  tc%      the busiest tensor pipe's share of its peak (sm__pipe_tensor*... / sm__inst_executed_pipe_tensor*)
  issue%   smsp__issue_active.avg.pct_of_peak_sustained_active
  occ      achieved / theoretical occupancy, % of the SM's warps
  L2hit%   lts__t_sector_hit_rate.pct
  regs     launch__registers_per_thread
  stalls   the three largest smsp__average_warps_issue_stalled_*_per_issue_active.ratio (warps stalled per issued
           instruction, by reason), or the sampled smsp__pcsamp_warps_issue_stalled_* counts as shares

A metric a section did not collect prints as "-". Usage:
  ncu_summary.py CSV [CSV ...] [--json OUT]
Exit 0 with at least one kernel row read, 1 with none, 2 on unreadable input.
"""
import csv
import json
import re
import sys

TIME_UNITS = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}
BYTE_UNITS = {"byte": 1e-6, "Kbyte": 1e-3, "Mbyte": 1.0, "Gbyte": 1e3, "KB": 1e-3, "MB": 1.0, "GB": 1e3,
              "KiB": 1.024e-3, "MiB": 1.048576, "GiB": 1073.741824}
STALL_RATIO = re.compile(r"^smsp__average_warps_issue_stalled_(\w+?)_per_issue_active\.ratio$")
STALL_SAMPLED = re.compile(r"^smsp__pcsamp_warps_issue_stalled_(\w+?)$")
TENSOR = re.compile(r"^sm__(pipe_tensor\w*|inst_executed_pipe_tensor\w*)\.avg\.pct_of_peak_sustained_active$")
NOT_STALLS = {"selected", "not_selected"}  # issuing, or eligible and passed over: not a wait


def number(text):
    """A metric value as a float (thousands separators allowed), or None."""
    t = (text or "").strip().replace(",", "")
    if t in ("", "n/a", "N/A", "-"):
        return None
    try:
        return float(t)
    except ValueError:
        return None


def short_name(name):
    """'void ns::(anonymous namespace)::matmul_decode<1, true>(flint::MatmulParams, int, int)' -> 'matmul_decode<1,true>'."""
    n = name.strip()
    if n.startswith("void "):
        n = n[5:]
    depth, cut = 0, len(n)  # drop the parameter list: the first '(' outside template brackets, after the name
    for i, ch in enumerate(n):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0 and not n[:i].endswith("::"):
            cut = i
            break
    n = n[:cut]
    depth, start = 0, 0  # drop the namespaces: the last '::' outside template brackets
    for i in range(len(n) - 1):
        ch = n[i]
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0 and n[i:i + 2] == "::":
            start = i + 2
    return n[start:].replace(" ", "")


def read_rows(path):
    """(header, units, rows) of one raw CSV: the header is the first row with a 'Kernel Name' column; a following row
    whose 'ID' is not a number is the units row."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        lines = list(csv.reader(f))
    for i, row in enumerate(lines):
        if "Kernel Name" in row:
            header = row
            break
    else:
        raise ValueError(f"{path}: no header row with a 'Kernel Name' column (is this `ncu --csv --page raw`?)")
    body = [r for r in lines[i + 1:] if len(r) == len(header)]
    id_col = header.index("ID") if "ID" in header else None
    units = {}
    if body and id_col is not None and number(body[0][id_col]) is None:
        units = dict(zip(header, body[0]))
        body = body[1:]
    return header, units, body


def summarize(header, units, row):
    v = dict(zip(header, row))

    def metric(name, scale=1.0):
        x = number(v.get(name))
        return None if x is None else x * scale

    us = metric("gpu__time_duration.sum", TIME_UNITS.get(units.get("gpu__time_duration.sum", "nsecond"), 1e-3))
    mb = metric("dram__bytes_read.sum", BYTE_UNITS.get(units.get("dram__bytes_read.sum", "byte"), 1e-6))
    tensor = [number(v[k]) for k in header if TENSOR.match(k) and number(v[k]) is not None]
    stalls = {}
    for k in header:
        m = STALL_RATIO.match(k)
        if m and m.group(1) not in NOT_STALLS and number(v[k]) is not None:
            stalls[m.group(1)] = number(v[k])
    sampled = False
    if not stalls:
        for k in header:
            m = STALL_SAMPLED.match(k)
            if m and m.group(1) not in NOT_STALLS and number(v[k]) is not None:
                stalls[m.group(1)] = number(v[k])
        total = sum(stalls.values())
        if total > 0:
            stalls = {k: x / total for k, x in stalls.items()}
            sampled = True
    top = sorted(stalls.items(), key=lambda kv: -kv[1])[:3]
    return {
        "id": v.get("ID", ""),
        "kernel": short_name(v.get("Kernel Name", "?")),
        "grid": v.get("Grid Size", "").replace(" ", ""),
        "block": v.get("Block Size", "").replace(" ", ""),
        "us": us,
        "dram_mb": mb,
        "dram_pct": metric("dram__throughput.avg.pct_of_peak_sustained_elapsed"),
        "sm_pct": metric("sm__throughput.avg.pct_of_peak_sustained_elapsed"),
        "tensor_pct": max(tensor) if tensor else None,
        "issue_pct": metric("smsp__issue_active.avg.pct_of_peak_sustained_active"),
        "occupancy_pct": metric("sm__warps_active.avg.pct_of_peak_sustained_active"),
        "theoretical_occupancy_pct": metric("sm__maximum_warps_per_active_cycle_pct"),
        "l2_hit_pct": metric("lts__t_sector_hit_rate.pct"),
        "registers": metric("launch__registers_per_thread"),
        "stalls": [{"reason": k, "value": x} for k, x in top],
        "stalls_sampled": sampled,
    }


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main(argv):
    paths, json_out = [], None
    i = 0
    while i < len(argv):
        if argv[i] == "--json" and i + 1 < len(argv):
            json_out = argv[i + 1]
            i += 2
            continue
        if argv[i] in ("-h", "--help"):
            print(__doc__)
            return 0
        paths.append(argv[i])
        i += 1
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    kernels = []
    for path in paths:
        try:
            header, units, rows = read_rows(path)
        except (OSError, ValueError) as e:
            print(f"ncu_summary: {e}", file=sys.stderr)
            return 2
        kernels += [dict(summarize(header, units, r), source=path) for r in rows]

    print("## summary ncu (one replay per kernel; cache flushed; docs/perf.md says how to read it)")
    print(f"{'kernel':<34} {'grid':>13} {'block':>9} {'us':>8} {'MB':>7} {'dram%':>5} {'sm%':>5} {'tc%':>5} "
          f"{'issue%':>6} {'occ':>9} {'L2hit%':>6} {'regs':>4}  stalls")
    for k in kernels:
        occ = f"{fmt(k['occupancy_pct'], '.0f')}/{fmt(k['theoretical_occupancy_pct'], '.0f')}"
        if k["stalls_sampled"]:  # shares of the sampled stalls
            stalls = ", ".join(f"{s['reason']} {100 * s['value']:.0f}%" for s in k["stalls"]) or "-"
        else:  # warps stalled per issued instruction
            stalls = ", ".join(f"{s['reason']} {s['value']:.2f}" for s in k["stalls"]) or "-"
        print(f"{k['kernel'][:34]:<34} {k['grid'][:13]:>13} {k['block'][:9]:>9} {fmt(k['us'], '.1f'):>8} "
              f"{fmt(k['dram_mb'], '.1f'):>7} {fmt(k['dram_pct'], '.0f'):>5} {fmt(k['sm_pct'], '.0f'):>5} "
              f"{fmt(k['tensor_pct'], '.0f'):>5} {fmt(k['issue_pct'], '.0f'):>6} {occ:>9} "
              f"{fmt(k['l2_hit_pct'], '.0f'):>6} {fmt(k['registers'], '.0f'):>4}  {stalls}")
    print(f"{len(kernels)} kernels profiled")
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump({"kernels": kernels}, f, indent=1)
    return 0 if kernels else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
