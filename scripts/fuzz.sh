#!/usr/bin/env bash
# Runs every libFuzzer target in fuzz/ for a bounded time over a temporary copy of
# its seed corpus (fuzz/corpus/<target>/; the committed corpus never grows), one
# line per target, and exits 1 when any target found a crash, leak, timeout or
# out-of-memory, printing the reproducer's path.
#
#   scripts/fuzz.sh [build-dir] [seconds-per-target]      (defaults: build-fuzz 20)
#
# The build directory must be configured with -DFLINT_FUZZ=ON (clang), usually
# with -DFLINT_SANITIZE=ON too; see docs/reliability.md, "Fuzzing". Nothing is
# built unless FUZZ_BUILD=1 (then: cmake --build <dir> --target flint_fuzz).
# FUZZ_TARGETS="gguf safetensors" runs only those. Findings and logs are kept in
# <build-dir>/fuzz-out/<target>/. Reproduce one with
#   <build-dir>/fuzz/fuzz_<target> <reproducer>
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build-fuzz}
seconds=${2:-20}
targets=${FUZZ_TARGETS:-"gguf safetensors config_json tokenizer_json tokenizer_roundtrip chat_template request openai_json"}
rss_limit_mb=${FUZZ_RSS_LIMIT_MB:-4096}
timeout_s=${FUZZ_TIMEOUT_S:-10}  # one input taking longer than this is a finding

if [[ ! -f "$build/CMakeCache.txt" ]] || ! grep -q '^FLINT_FUZZ:BOOL=ON' "$build/CMakeCache.txt"; then
  echo "fuzz.sh: $build is not a build directory configured with -DFLINT_FUZZ=ON" >&2
  echo "  CC=clang CXX=clang++ cmake -S . -B $build -G Ninja -DFLINT_FUZZ=ON -DFLINT_SANITIZE=ON -DFLINT_CUDA=OFF" >&2
  exit 2
fi
if [[ "${FUZZ_BUILD:-0}" == 1 ]]; then
  cmake --build "$build" --target flint_fuzz
fi

# Sanitizer reports end the run (UBSan already aborts: -fno-sanitize-recover).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

work=$(mktemp -d "${TMPDIR:-/tmp}/flint-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=0
for t in $targets; do
  bin="$build/fuzz/fuzz_$t"
  if [[ ! -x "$bin" ]]; then
    echo "fuzz_$t: MISSING $bin (build it: FUZZ_BUILD=1 scripts/fuzz.sh $build)"
    failed=1
    continue
  fi
  out="$build/fuzz-out/$t"
  mkdir -p "$out"
  corpus="$work/$t"
  mkdir -p "$corpus"
  [[ -d "fuzz/corpus/$t" ]] && cp -r "fuzz/corpus/$t/." "$corpus/"
  seeds=$(find "$corpus" -type f | wc -l)
  dict=()
  [[ -f "fuzz/dict/$t.dict" ]] && dict=(-dict="fuzz/dict/$t.dict")
  log="$out/fuzz.log"
  start=$(date +%s.%N)
  rc=0
  "$bin" "$corpus" "${dict[@]}" -max_total_time="$seconds" -rss_limit_mb="$rss_limit_mb" -timeout="$timeout_s" \
    -artifact_prefix="$out/" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  grown=$(find "$corpus" -type f | wc -l)
  if [[ $rc == 0 ]]; then
    echo "fuzz_$t: ok, ${execs:-?} execs in ${elapsed} s (${rate:-?}/s), corpus $seeds -> $grown"
  else
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    kind=$(grep -m1 -oE 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer): [a-zA-Z0-9 ().:;-]+|runtime error: .*|invariant failed: .*|deadly signal|timeout after [0-9]+ seconds|out-of-memory' "$log" || true)
    echo "fuzz_$t: FAILED (exit $rc) after ${execs:-?} execs in ${elapsed} s: ${kind:-see log}"
    echo "  reproducer: ${artifact:-none written} (run: $bin ${artifact:-<input>})"
    echo "  log: $log"
  fi
done
exit $failed
