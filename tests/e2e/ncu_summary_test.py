#!/usr/bin/env python3
"""bench/ncu_summary.py (scripts/ncu-kernels.sh's reader) on raw CSV laid out as `ncu --csv --page raw` writes it:
a header row of metric names, a units row, a row per kernel. It converts the units (ms and µs durations, Kbyte and
byte reads), shortens demangled names, ranks the stall reasons (leaving out "selected"), takes the busiest tensor
pipe, falls back on sampled stall counts as shares, reads thousands separators; and on broken input (no header, a
missing file, a header with no kernel row, rows of the wrong width) it exits 2, 2, 1, and skips the bad rows.
Then scripts/ncu-kernels.sh with a stand-in ncu (a script that records its arguments, writes a report and prints a
CSV on --import): it profiles both benches with their --only shapes, --reps 0,1 and --no-ceilings, imports both
reports and prints the summary; with no ncu it exits 3, and with a report missing it says so and fails.
Usage: ncu_summary_test.py REPO_ROOT"""
import csv
import json
import os
import subprocess
import sys
import tempfile

BASE = ["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream", "Block Size", "Grid Size",
        "Device", "CC"]


def write_csv(path, header, rows, preamble=()):
    with open(path, "w", newline="") as f:
        for line in preamble:
            f.write(line + "\n")
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(header)
        for r in rows:
            w.writerow(r)


def run(script, *args):
    p = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


FAKE_NCU = r"""#!/usr/bin/env python3
import os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_NCU_LOG"], "a") as f:
    f.write(" ".join(args) + "\n")
if args[:1] == ["--version"]:
    print("NVIDIA (R) Nsight Compute Command Line Profiler (stand-in)")
elif args[:1] == ["--import"]:
    print(open(os.environ["FAKE_NCU_CSV"]).read(), end="")
else:
    out = args[args.index("-o") + 1]
    if os.path.basename(out) not in os.environ.get("FAKE_NCU_FAIL", ""):
        open(out + ".ncu-rep", "w").write("report")
    print("==PROF== Disconnected from process 1")
"""


def check_script(root, csv_path, d):
    script = os.path.join(root, "scripts", "ncu-kernels.sh")
    fake = os.path.join(d, "ncu")
    with open(fake, "w") as f:
        f.write(FAKE_NCU)
    os.chmod(fake, 0o755)
    log = os.path.join(d, "ncu-args.log")
    env = dict(os.environ, NCU=fake, FAKE_NCU_LOG=log, FAKE_NCU_CSV=csv_path, NCU_JSON=os.path.join(d, "n.json"),
               NCU_MATMUL_SHAPES="llama-3.2-1b:o:1", NCU_ATTENTION_SHAPES="llama-3.2-1b:prefill:512")
    p = subprocess.run(["bash", script, os.path.join(d, "prof")], capture_output=True, text=True, timeout=60,
                       env=env, cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    calls = open(log).read().splitlines()
    runs = [c for c in calls if " -o " in f" {c} "]
    assert len(runs) == 2, calls
    assert "--clock-control none" in runs[0] and "--only llama-3.2-1b:o:1 --reps 0,1 --no-ceilings" in runs[0], runs
    assert runs[0].split(" -k ")[1].startswith("regex:") and "bench/matmul_bench" in runs[0], runs
    assert "bench/attention_bench --only llama-3.2-1b:prefill:512 --reps 0,1 --no-ceilings" in runs[1], runs
    assert sum(c.startswith("--import") for c in calls) == 2, calls
    assert p.stdout.count("matmul_decode<1,true>") == 2 and "4 kernels profiled" in p.stdout, p.stdout
    assert len(json.load(open(os.path.join(d, "n.json")))["kernels"]) == 4
    # One bench's report missing: the other is still read, and the script fails.
    env["FAKE_NCU_FAIL"] = "attention"
    p = subprocess.run(["bash", script, os.path.join(d, "prof2")], capture_output=True, text=True, timeout=60,
                       env=env, cwd=root)
    assert p.returncode != 0 and "attention: no report" in p.stdout and "2 kernels profiled" in p.stdout, p.stdout
    env["NCU"] = os.path.join(d, "no-such-ncu")
    p = subprocess.run(["bash", script, os.path.join(d, "prof3")], capture_output=True, text=True, timeout=60,
                       env=env, cwd=root)
    assert p.returncode == 3 and "no ncu" in p.stdout, p.stdout


def main():
    root = sys.argv[1]
    script = os.path.join(root, "bench", "ncu_summary.py")
    metrics = ["gpu__time_duration.sum", "dram__bytes_read.sum", "dram__throughput.avg.pct_of_peak_sustained_elapsed",
               "sm__throughput.avg.pct_of_peak_sustained_elapsed",
               "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
               "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
               "smsp__issue_active.avg.pct_of_peak_sustained_active",
               "sm__warps_active.avg.pct_of_peak_sustained_active", "sm__maximum_warps_per_active_cycle_pct",
               "lts__t_sector_hit_rate.pct", "launch__registers_per_thread",
               "smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio",
               "smsp__average_warps_issue_stalled_selected_per_issue_active.ratio",
               "smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio",
               "smsp__average_warps_issue_stalled_wait_per_issue_active.ratio",
               "smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio"]
    header = BASE + metrics
    units = [""] * len(BASE) + ["usecond", "Kbyte", "%", "%", "%", "%", "%", "%", "%", "%", "register/thread",
                                "ratio", "ratio", "ratio", "ratio", "ratio"]
    decode = ["0", "4242", "matmul_bench", "127.0.0.1",
              "void flint::cuda::mm::(anonymous namespace)::matmul_decode<1, true>(flint::MatmulParams, int, int)",
              "1", "13", "(128, 1, 1)", "(256, 1, 1)", "0", "9.0",
              "22.85", "67,123.5", "69.4", "12.1", "3.5", "n/a", "8.2", "24.9", "50", "1.2", "118",
              "9.75", "1.00", "0.50", "2.25", "0.10"]
    wgmma = ["1", "4242", "matmul_bench", "127.0.0.1",
             "void flint::cuda::mm::(anonymous namespace)::matmul_prefill_wgmma<false, 2>(flint::MatmulParams, int, int)",
             "1", "13", "(256, 1, 1)", "(128, 16, 1)", "0", "9.0",
             "1,024.1", "80,000", "20.0", "55.0", "18.0", "31.5", "40.0", "12.0", "12.5", "70", "168",
             "0.40", "1.00", "2.10", "0.90", "1.50"]
    short = ["2", "4242", "matmul_bench", "127.0.0.1", "reduce_splits", "1"]  # wrong width: skipped
    with tempfile.TemporaryDirectory() as d:
        good = os.path.join(d, "good.csv")
        write_csv(good, header, [units, decode, wgmma, short], preamble=["==PROF== Disconnected from process 4242"])
        out = os.path.join(d, "out.json")
        rc, text = run(script, good, "--json", out)
        assert rc == 0, text
        ks = json.load(open(out))["kernels"]
        assert [k["kernel"] for k in ks] == ["matmul_decode<1,true>", "matmul_prefill_wgmma<false,2>"], ks
        a, b = ks
        assert abs(a["us"] - 22.85) < 1e-9 and abs(b["us"] - 1024.1) < 1e-9, (a["us"], b["us"])
        assert abs(a["dram_mb"] - 67.1235) < 1e-6 and abs(b["dram_mb"] - 80.0) < 1e-9, (a["dram_mb"], b["dram_mb"])
        assert a["tensor_pct"] == 3.5 and b["tensor_pct"] == 31.5, (a["tensor_pct"], b["tensor_pct"])
        assert a["grid"] == "(256,1,1)" and a["registers"] == 118 and a["occupancy_pct"] == 24.9
        assert [s["reason"] for s in a["stalls"]] == ["long_scoreboard", "wait", "barrier"], a["stalls"]
        assert [s["reason"] for s in b["stalls"]] == ["barrier", "math_pipe_throttle", "wait"], b["stalls"]
        assert not a["stalls_sampled"]
        assert "2 kernels profiled" in text and "long_scoreboard 9.75" in text, text
        assert text.index("matmul_decode<1,true>") < text.index("matmul_prefill_wgmma<false,2>"), text
        check_script(root, good, d)

        # Milliseconds, no units row's byte unit given as "byte", and sampled stalls only.
        sampled = os.path.join(d, "sampled.csv")
        h2 = BASE + ["gpu__time_duration.sum", "dram__bytes_read.sum", "smsp__pcsamp_warps_issue_stalled_long_scoreboard",
                     "smsp__pcsamp_warps_issue_stalled_selected", "smsp__pcsamp_warps_issue_stalled_no_instruction"]
        u2 = [""] * len(BASE) + ["msecond", "byte", "", "", ""]
        r2 = ["0", "1", "attention_bench", "h", "void flint::cuda::(anonymous namespace)::decode_kernel<64, 4>("
              "flint::AttentionParams, int, int, int, float)", "1", "13", "(128, 1, 1)", "(64, 8, 32)", "0", "9.0",
              "0.5", "2000000", "300", "900", "100"]
        write_csv(sampled, h2, [u2, r2])
        rc, text = run(script, sampled, "--json", out)
        assert rc == 0, text
        k = json.load(open(out))["kernels"][0]
        assert k["kernel"] == "decode_kernel<64,4>" and k["us"] == 500.0 and k["dram_mb"] == 2.0, k
        assert k["stalls_sampled"] and [s["reason"] for s in k["stalls"]] == ["long_scoreboard", "no_instruction"]
        assert abs(k["stalls"][0]["value"] - 0.75) < 1e-9, k["stalls"]
        assert k["dram_pct"] is None and " - " in text, text

        # Broken inputs.
        junk = os.path.join(d, "junk.csv")
        with open(junk, "w") as f:
            f.write("this is not ncu output\n1,2,3\n")
        rc, text = run(script, junk)
        assert rc == 2 and "Kernel Name" in text, (rc, text)
        rc, text = run(script, os.path.join(d, "missing.csv"))
        assert rc == 2, (rc, text)
        empty = os.path.join(d, "empty.csv")
        write_csv(empty, header, [units])
        rc, text = run(script, empty)
        assert rc == 1 and "0 kernels profiled" in text, (rc, text)
        rc, text = run(script)
        assert rc == 2, (rc, text)
    print("ncu_summary: ok")


if __name__ == "__main__":
    main()
