#!/usr/bin/env bash
# End-to-end: flint-run as a newcomer runs it. A chat answer streams from the
# default model; bad input (missing file, corrupt GGUF, prompt over the
# context, bad flags) exits non-zero with a clear message and no crash.
#   flint_run_test.sh FLINT_RUN MODELS_DIR TEST_DATA_DIR
set -u
bin=$1 models=$2 data=$3
model=$models/SmolLM2-135M-Instruct.Q4_1.gguf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0 passed=0

check() {  # check NAME CONDITION-COMMAND...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else echo "FAIL: $name"; failures=$((failures + 1)); fi
}

# expect_error NAME EXPECTED-TEXT ARGS...: exit code 1 or 2, message on stderr, no signal.
expect_error() {
  local name=$1 text=$2; shift 2
  "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  check "$name: exit code $rc" test "$rc" -eq 1 -o "$rc" -eq 2
  check "$name: message has '$text'" grep -q -- "$text" "$tmp/err"
}

if [ -f "$model" ]; then
  "$bin" -m "$model" --chat -p "What is the capital of France?" --temperature 0 -n 32 >"$tmp/out" 2>"$tmp/err"
  check "chat exits 0" test $? -eq 0
  check "chat answer names Paris" grep -q "Paris" "$tmp/out"
  check "speed report on stderr" grep -q "generation: .* tok/s" "$tmp/err"
  check "chat stops at end of turn" grep -q "finish: stop" "$tmp/err"
  # Same seed, same text; sampling on.
  "$bin" -m "$model" -p "Once upon a time" --seed 7 -n 16 >"$tmp/a" 2>/dev/null
  "$bin" -m "$model" -p "Once upon a time" --seed 7 -n 16 >"$tmp/b" 2>/dev/null
  check "same seed, same text" cmp -s "$tmp/a" "$tmp/b"
  expect_error "prompt over the context" "exceeds the context" -m "$model" -p "$(printf 'word %.0s' $(seq 1 200))" -c 64
  head -c 100000 "$model" >"$tmp/truncated.gguf"
  expect_error "truncated GGUF" "truncated.gguf" -m "$tmp/truncated.gguf" -p hi
else
  echo "note: $model absent (scripts/fetch-model.sh); model cases skipped"
fi
expect_error "missing model" "no such file" -m "$tmp/none.gguf" -p hi
printf 'not a gguf file at all' >"$tmp/bad.gguf"
expect_error "bad magic" "bad.gguf" -m "$tmp/bad.gguf" -p hi
expect_error "unknown flag" "unknown option" -m "$model" -p hi --frobnicate
expect_error "bad number" "not a number" -m "$model" -p hi -n many
expect_error "negative temperature" "temperature" -m "$model" -p hi --temperature -1
# A directory model without a tokenizer is refused clearly.
expect_error "no tokenizer" "no tokenizer" -m "$data/tiny-qwen3" -p hi

echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
