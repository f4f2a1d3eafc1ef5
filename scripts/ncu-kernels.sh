#!/usr/bin/env bash
# ncu-kernels.sh: Nsight Compute on the kernels whose device figures sit furthest from their limits, so that one
# device call says why (DRAM busy, SMs full, tensor pipes, occupancy, what the warps wait on), not only how fast.
# Runs on the GPU machine from the repo root, with the carried build (scripts/gpu-build.sh); gpu-check.sh's
# ncu_kernels step calls it. Nothing is compiled there.
#
#   scripts/ncu-kernels.sh [OUTDIR]   env: FLINT_BUILD_DIR (build-gpu), NCU (the ncu binary), PYTHON, NCU_JSON (the
#                                          summary's JSON, default OUTDIR/ncu.json), NCU_MATMUL_SHAPES and
#                                          NCU_ATTENTION_SHAPES (the benches' --only keys)
#
# Each bench runs only the shapes named, one warm-up-free timed call each (--reps 0,1), no ceiling kernels
# (--no-ceilings); ncu profiles Flint's matmul and attention kernels and cuBLASLt's on the same shapes (one replay
# each, clocks left alone as docs/perf.md's figures were taken), and bench/ncu_summary.py prints a line per kernel
# in launch order: per matmul shape Flint's plain product (the check), cuBLASLt's (check, then timed), Flint's fused
# product (timed), each followed by its split-K reduction where K is split; per attention shape its kernel, twice
# (the check, then timed). Exit: 0 when both profiles were read, 3 when there is no ncu, else the failing part's
# status.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
BUILD=${FLINT_BUILD_DIR:-build-gpu}
PY=${PYTHON:-python3}
OUTDIR=${1:-$(mktemp -d /tmp/ncu-kernels.XXXXXX)}
mkdir -p "$OUTDIR"

find_ncu() {
  if [ -n "${NCU:-}" ]; then echo "$NCU"; return; fi
  command -v ncu && return
  local c
  for c in /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu; do
    [ -x "$c" ] && { echo "$c"; return; }
  done
}
NCU_BIN=$(find_ncu)
if [ -z "$NCU_BIN" ] || [ ! -x "$NCU_BIN" ]; then
  echo "ncu-kernels: no ncu (NCU, PATH, /usr/local/cuda/bin, /opt/nvidia/nsight-compute/*/)"
  exit 3
fi
echo "ncu: $NCU_BIN ($("$NCU_BIN" --version 2>&1 | tail -1))"

# Batch 1 decode (the layer matrices at 39-79% of copy, the LM head at ~99% as the reference), then the prefill
# kernel at M = 128 and 2048 (0.14-0.59x cuBLAS); attention decode at batch 1 and 64 with 4096 keys (11-47% of copy),
# and prefill at 2048 tokens (0.29-0.36x torch SDPA). docs/perf.md has the timed figures for all of them.
MATMUL_SHAPES=${NCU_MATMUL_SHAPES:-llama-3.2-1b:gate_up:1,llama-3.2-1b:down:1,llama-3.2-1b:o:1,llama-3.2-1b:lm_head:1,llama-3.2-1b:gate_up:128,llama-3.2-1b:gate_up:2048}
ATTENTION_SHAPES=${NCU_ATTENTION_SHAPES:-llama-3.2-1b:decode:1:4096,llama-3.2-1b:decode:64:4096,qwen2.5-1.5b:decode:64:4096,llama-3.2-1b:prefill:2048}
# Flint's kernels by function name, and cuBLASLt's (gemm / nvjet / cutlass / xmma in theirs); not the benches' own
# fill, check and stream-hold kernels.
KERNELS='regex:^(matmul_|reduce_splits|decode_kernel|decode_mma_kernel|prefill_kernel)|gemm|nvjet|cutlass|xmma'
SECTIONS=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
          --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis)

status=0
profile() {  # profile NAME BENCH ARGS...: NAME.ncu-rep, NAME.log (the bench's and ncu's output), NAME.csv
  local name=$1
  shift
  echo "== $name: $*"
  "$NCU_BIN" --clock-control none -f -o "$OUTDIR/$name" -k "$KERNELS" --launch-count 60 "${SECTIONS[@]}" "$@" \
    > "$OUTDIR/$name.log" 2>&1
  local rc=$?
  grep -E '^==(PROF|ERROR|WARNING)==' "$OUTDIR/$name.log" | grep -v 'Profiling "' | tail -5
  if [ ! -s "$OUTDIR/$name.ncu-rep" ]; then
    echo "$name: no report (ncu exit $rc); the end of its log:"
    tail -15 "$OUTDIR/$name.log"
    status=${rc:-1}
    [ "$status" -eq 0 ] && status=1
    return
  fi
  [ "$rc" -ne 0 ] && echo "$name: ncu exit $rc (the report was written; the bench may have failed a check)"
  "$NCU_BIN" --import "$OUTDIR/$name.ncu-rep" --csv --page raw > "$OUTDIR/$name.csv" 2> "$OUTDIR/$name.import.log" \
    || { echo "$name: import failed:"; tail -5 "$OUTDIR/$name.import.log"; status=1; }
}

profile matmul "$BUILD/bench/matmul_bench" --only "$MATMUL_SHAPES" --reps 0,1 --no-ceilings
profile attention "$BUILD/bench/attention_bench" --only "$ATTENTION_SHAPES" --reps 0,1 --no-ceilings

csvs=()
for f in "$OUTDIR/matmul.csv" "$OUTDIR/attention.csv"; do [ -s "$f" ] && csvs+=("$f"); done
if [ "${#csvs[@]}" -eq 0 ]; then
  echo "ncu-kernels: nothing profiled"
  exit "$([ "$status" -ne 0 ] && echo "$status" || echo 1)"
fi
"$PY" bench/ncu_summary.py "${csvs[@]}" --json "${NCU_JSON:-$OUTDIR/ncu.json}" || status=$?
exit "$status"
