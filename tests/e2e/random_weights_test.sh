#!/usr/bin/env bash
# End-to-end: flint-run and cpu_model_bench on random-weight models of real shapes (--random-weights),
# no model file. Greedy output is the same run to run and differs with the weight seed; the dumped
# logits are an .npy of (prompt tokens, vocab) float32 whose last row picks the first generated token;
# bad specs and --device cuda fail with a clear message.
#   random_weights_test.sh FLINT_RUN CPU_MODEL_BENCH
set -u
bin=$1 bench=$2
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

ids=1,50,700,9000,3
for spec in smollm2-135m:layers=2 qwen3-0.6b:layers=1 qwen2.5-1.5b:layers=1; do
  "$bin" --random-weights "$spec" --prompt-ids "$ids" --temperature 0 -n 6 -t 2 --dump-logits "$tmp/l.npy" \
    >"$tmp/a" 2>"$tmp/err"
  check "$spec: exits 0" test $? -eq 0
  check "$spec: prints 6 token ids" grep -qE '^[0-9]+( [0-9]+){5}$' "$tmp/a"
  check "$spec: reports the generation" grep -q "random weights $spec" "$tmp/err"
  "$bin" --random-weights "$spec" --prompt-ids "$ids" --temperature 0 -n 6 -t 1 >"$tmp/b" 2>/dev/null
  check "$spec: same output with another thread count" cmp -s "$tmp/a" "$tmp/b"
  "$bin" --random-weights "$spec,seed=99" --prompt-ids "$ids" --temperature 0 -n 6 -t 2 >"$tmp/c" 2>/dev/null
  check "$spec: another seed, other tokens" test "$(cat "$tmp/a")" != "$(cat "$tmp/c")"
  # The .npy: magic, then a header naming float32 and shape (5, vocab); 5 * vocab * 4 bytes of data.
  vocab=$("$bin" --list-shapes | awk -v n="${spec%%:*}" '$1 == n {for (i = 1; i <= NF; i++) if ($i == "vocab") print $(i + 1)}' | tr -d ,)
  check "$spec: npy header" grep -qa "'descr': '<f4', 'fortran_order': False, 'shape': (5, $vocab)" "$tmp/l.npy"
  size=$(stat -c %s "$tmp/l.npy")
  check "$spec: npy size $size" test $(( (size - 5 * vocab * 4) % 64 )) -eq 0 -a "$size" -gt $((5 * vocab * 4))
done

# -n 0 with --dump-logits: logits only.
"$bin" --random-weights smollm2-135m:layers=1 --prompt-ids 7 -n 0 --dump-logits "$tmp/one.npy" >/dev/null 2>&1
check "-n 0 --dump-logits exits 0" test $? -eq 0
check "-n 0 --dump-logits writes the file" test -s "$tmp/one.npy"

expect_error "unknown shape lists the known ones" "known: smollm2-135m, llama-3.2-1b" --random-weights gpt-5 --prompt-ids 1
expect_error "layers out of range" "layers=31 must be in \[1, 30\]" --random-weights smollm2-135m:layers=31 --prompt-ids 1
expect_error "no tokenizer, text prompt" "give the prompt with --prompt-ids" --random-weights smollm2-135m:layers=1 -p hi
expect_error "id past the vocabulary" "token id 49152 outside the vocabulary" --random-weights smollm2-135m:layers=1 --prompt-ids 49152
expect_error "bad ids" "is not a token id" --random-weights smollm2-135m:layers=1 --prompt-ids 1,,2
# Without a usable GPU (or a CUDA build) the factory says which: both messages start so.
expect_error "cuda refused" "--device cuda: " --random-weights smollm2-135m:layers=1 --prompt-ids 1 --device cuda
expect_error "model and random weights" "give one of -m MODEL and --random-weights" -m x.gguf --random-weights smollm2-135m --prompt-ids 1
expect_error "-n 0 without a dump" "at least 1" --random-weights smollm2-135m:layers=1 --prompt-ids 1 -n 0

# The benchmark on a random model: a table with both phases, and its JSON.
"$bench" --random-weights smollm2-135m:layers=2 -t 2 --prompt 16 --decode 4 --runs 1 --json "$tmp/bench.json" >"$tmp/bench" 2>&1
check "bench exits 0" test $? -eq 0
check "bench names the random model" grep -q "model random:smollm2-135m:layers=2,seed=" "$tmp/bench"
check "bench prefill row" grep -qE "^prefill +[0-9.]+" "$tmp/bench"
check "bench decode row" grep -qE "^decode +[0-9.]+ +[0-9.]+" "$tmp/bench"
check "bench json" grep -q '"decode_tok_s"' "$tmp/bench.json"
"$bench" --random-weights nope >"$tmp/bench" 2>&1
check "bench: unknown shape fails" test $? -ne 0
check "bench: unknown shape is named" grep -q 'unknown model shape "nope"' "$tmp/bench"

echo "random_weights_test: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
