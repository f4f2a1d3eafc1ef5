#!/usr/bin/env bash
# The tests under sanitizers, with clang (CUDA off, no -march=native):
#   asan: build-asan (FLINT_SANITIZE=address: ASan + UBSan): the unit tests and
#         the end-to-end suites (e2e.flintd, e2e.flint_client, e2e.flint_run).
#   tsan: build-tsan (FLINT_SANITIZE=thread): the unit tests of the threaded parts
#         (flint_threaded_tests: engine, scheduler, request streams, thread pool, server) and the
#         end-to-end tests that run streams concurrently, cancel them and drain.
# Any sanitizer report fails the run: the runtimes halt on the first error, and
# each writes its reports to files under build-*/sanitizer-reports, which are
# printed and counted at the end (a flintd the harness stops with SIGTERM or
# SIGKILL has no exit code a test looks at).
# The ASan tree is also the fuzz tree (FLINT_FUZZ=ON): scripts/fuzz.sh runs every
# libFuzzer target in it for FUZZ_SECONDS (default 10; 5 with --ci) each.
#   scripts/test-sanitizers.sh [--ci] [--build-only] [asan] [tsan]     (default: both)
# --ci (set by .ci/run): the end-to-end phases run a chosen part of each suite (8 of
# the 26 bad requests, the cancel and disconnect tests; under TSan also SIGINT), keeping
# CI inside its time; without it they run whole (security, 16 streams, drain too).
# Expects what scripts/setup.sh makes: Debian's packages (clang too), the default model, .venv.
# Env: FLINT_TEST_SLOWDOWN (default 4 under ASan, 10 under TSan) scales the
# end-to-end tests' timeouts, which are tuned for a Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
ci=0 build_only=0
while [ $# -gt 0 ]; do
  case $1 in
    --ci) ci=1; shift ;;
    --build-only) build_only=1; shift ;;
    *) break ;;
  esac
done
phases=("$@")
[ ${#phases[@]} -gt 0 ] || phases=(asan tsan)
for p in "${phases[@]}"; do
  case $p in asan | tsan) ;; *) echo "usage: $0 [--ci] [--build-only] [asan] [tsan]" >&2; exit 2 ;; esac
done
jobs=$(nproc)
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi

# lld links the big test and server binaries several times faster than ld.bfd.
lld=OFF
command -v ld.lld >/dev/null && lld=ON

timings=()
phase_start=0
begin() { echo "==== $1 ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"; phase_start=$SECONDS; }
end() { timings+=("$(printf '%-32s %4d s' "$1" $((SECONDS - phase_start)))"); }

# configure_and_build DIR SANITIZER FUZZ TARGET...
configure_and_build() {
  local dir=$1 sanitizer=$2 fuzz=$3; shift 3
  CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DFLINT_CUDA=OFF \
    -DFLINT_SANITIZE="$sanitizer" -DFLINT_FUZZ="$fuzz" -DFLINT_LLD="$lld" "${launcher[@]}" >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; return 1; }
  cmake --build "$dir" -j"$jobs" --target "$@"
}

# check_reports DIR: prints every report the runtimes wrote under DIR; fails if any.
check_reports() {
  local files
  files=$(find "$1" -type f 2>/dev/null | sort)
  [ -z "$files" ] && return 0
  echo "==== sanitizer reports in $1:"
  for f in $files; do echo "---- $f"; cat "$f"; done
  return 1
}

# gtest_shards BINARY [GTEST ARGS...]: runs BINARY's tests as $jobs shards at once (one process each, not one per
# test as CTest does: a sanitized process is slow to start and big to load); fails if any shard fails.
gtest_shards() {
  local bin=$1; shift
  local pids=() rc=0 i
  for ((i = 0; i < jobs; i++)); do
    GTEST_TOTAL_SHARDS=$jobs GTEST_SHARD_INDEX=$i "$bin" --gtest_brief=1 "$@" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  return $rc
}

failed=0
# run NAME COMMAND...: runs a test phase, timed; a failure is counted, the phases go on.
run() {
  local name=$1; shift
  begin "$name"
  if ! "$@"; then echo "FAIL: $name"; failed=$((failed + 1)); fi
  end "$name"
}

# What each tree builds. The flint client only for the full e2e run (test_security.py drives it); --ci's part
# does not use it.
asan_targets=(flint_tests flintd flint-run flint_fuzz flint_cuda_emu_tests flint_gpu_tests_emu)
[ $ci = 1 ] || asan_targets+=(flint)
tsan_targets=(flint_threaded_tests flintd)

# --build-only: configure and build the trees the phases need, run nothing (.ci/run builds them at the lowest
# priority while the normal tests run, then runs the phases on what is built).
if [ $build_only = 1 ]; then
  for p in "${phases[@]}"; do
    if [ "$p" = asan ]; then
      configure_and_build build-asan address ON "${asan_targets[@]}"
    else
      configure_and_build build-tsan thread OFF "${tsan_targets[@]}"
    fi
  done
  exit 0
fi

for p in "${phases[@]}"; do
  if [ "$p" = asan ]; then
    dir=build-asan reports=$root/build-asan/sanitizer-reports
    begin "asan: configure + build"
    configure_and_build $dir address ON "${asan_targets[@]}"
    end "asan: configure + build"
    rm -rf "$reports" && mkdir -p "$reports"
    # detect_leaks: flintd and the tools exit cleanly, so what is still allocated then leaked.
    export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:log_path=$reports/asan"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:report_error_type=1:log_path=$reports/ubsan"
    export LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0"
    export FLINT_TEST_SLOWDOWN=${FLINT_TEST_SLOWDOWN:-4}
    # --ci leaves out the two TwinBackend tests on SmolLM2 (a minute of scalar twin kernels under ASan; test-only
    # code, and the tiny-model twin tests still run).
    unit_filter=()
    [ $ci = 1 ] && unit_filter=(--gtest_filter='-TwinBackend.PrefillAndBucketPaddedDecodeTrackTheCpuBackend:TwinBackend.PerLayerDiffAgainstTheCpuBackendIsWithinTheBound')
    run "asan: unit tests" gtest_shards $dir/tests/flint_tests "${unit_filter[@]}"
    if [ $ci = 1 ]; then
      run "asan: e2e.flint_run" ctest --test-dir $dir --output-on-failure -R '^e2e\.flint_run$'
      # Of the bad requests, those whose checks parse bytes (UTF-8, token ids, lengths, stop strings, ids): each
      # runs beside a 16-token stream, several seconds under ASan; the fuzzers cover the parsers besides.
      bad=tests/e2e/test_flintd_bad_requests.py
      beside="$bad::test_a_bad_request_is_invalid_argument_naming_the_problem_and_another_stream_runs_on"
      run "asan: e2e (part)" env FLINTD=$dir/server/flintd FLINT=$dir/client/flint .venv/bin/python -m pytest -q \
        -p no:cacheprovider "$bad::test_unary_calls_reject_bad_input_with_invalid_argument" \
        "$beside[chat without messages]" "$beside[prompt over the context]" "$beside[invalid UTF-8 in Generate.text]" \
        "$beside[invalid UTF-8 in a chat message]" "$beside[invalid UTF-8 in a stop string]" \
        "$beside[token id out of vocabulary]" "$beside[seventeen stop strings]" "$beside[request_id over 128 bytes]" \
        "tests/e2e/test_flintd.py::test_cancelled_and_expired_requests_give_their_kv_blocks_back" \
        "tests/e2e/test_flintd.py::test_a_client_that_disconnects_mid_stream_frees_its_sequence" \
        "tests/e2e/test_openai_http.py::test_a_client_that_closes_a_stream_mid_way_frees_its_sequence"
    else
      run "asan: e2e" ctest --test-dir $dir --output-on-failure -j"$jobs" -R '^e2e\.'
    fi
    # The CUDA kernels on the emulator (tests/cuda_emu): out-of-bounds device memory, which the emulator's exact-sized
    # allocations make visible. Small cases (work bound 1e7), no fake stacks (slow with the emulator's fibers), and
    # not the death tests (a fault abandons a fiber, which ASan warns about).
    emu_filter='MatmulGpu.EveryKernel*:MatmulGpu.Launcher*:AttentionGpu.Rope*:AttentionGpu.OneHot*:AttentionGpu.Explicit*'
    emu_filter+=':AttentionGpu.Launchers*:AttentionGpu.DecodeSplitCounters*:AttentionGpu.DecodeKvAhead*:OpsGpu.*'
    run "asan: cuda emulator" env ASAN_OPTIONS="$ASAN_OPTIONS:detect_stack_use_after_return=0" \
      FLINT_CUDA_EMU_MAX_WORK=1e7 bash -c "$dir/tests/cuda_emu/flint_cuda_emu_tests --gtest_filter=-*DeathTest* \
        && $dir/tests/cuda_emu/flint_gpu_tests_emu --gtest_filter='$emu_filter'"
    run "asan: fuzz" scripts/fuzz.sh $dir "${FUZZ_SECONDS:-$((ci ? 5 : 10))}"
    run "asan: reports" check_reports "$reports"
    unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS FLINT_TEST_SLOWDOWN
  else
    dir=build-tsan reports=$root/build-tsan/sanitizer-reports
    begin "tsan: configure + build"
    configure_and_build $dir thread OFF "${tsan_targets[@]}"
    end "tsan: configure + build"
    rm -rf "$reports" && mkdir -p "$reports"
    # ignore_noninstrumented_modules: what Debian's gRPC, protobuf and absl libraries
    # (built without TSan) do through intercepted calls (malloc, memcpy, sendmsg) is
    # not checked; what their inline header code does in ours is (tests/sanitizers/tsan.supp).
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$root/tests/sanitizers/tsan.supp:log_path=$reports/tsan"
    export FLINT_TEST_SLOWDOWN=${FLINT_TEST_SLOWDOWN:-10}
    # The suites whose code runs on more than one thread.
    run "tsan: unit tests" gtest_shards $dir/tests/flint_threaded_tests
    tsan_e2e=(
      "tests/e2e/test_flintd.py::test_a_cancelled_stream_ends_cancelled_and_the_server_serves_on"
      "tests/e2e/test_flintd.py::test_a_client_that_disconnects_mid_stream_frees_its_sequence"
      "tests/e2e/test_openai_http.py::test_a_client_that_closes_a_stream_mid_way_frees_its_sequence"
      "tests/e2e/test_flintd_lifecycle.py::test_sigint_on_an_idle_server_exits_zero_at_once")
    [ $ci = 1 ] || tsan_e2e+=(
      tests/e2e/test_flintd_lifecycle.py
      "tests/e2e/test_flintd.py::test_sixteen_concurrent_streams_each_give_the_tokens_of_the_same_request_run_alone"
      "tests/e2e/test_openai_http.py::test_while_draining_health_is_503_and_new_requests_are_503_while_running_streams_finish"
      "tests/e2e/test_openai_http.py::test_a_stream_cut_short_by_the_drain_timeout_ends_with_an_error_event_the_client_raises")
    run "tsan: e2e" env FLINTD=$dir/server/flintd .venv/bin/python -m pytest -q -p no:cacheprovider "${tsan_e2e[@]}"
    run "tsan: reports" check_reports "$reports"
    unset TSAN_OPTIONS FLINT_TEST_SLOWDOWN
  fi
done

echo "==== timings (load now $(cut -d' ' -f1-3 /proc/loadavg), $jobs cores):"
printf '%s\n' "${timings[@]}"
if [ "$failed" -gt 0 ]; then echo "$failed phase(s) failed"; exit 1; fi
echo "all sanitizer phases passed"
