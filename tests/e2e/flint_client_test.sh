#!/usr/bin/env bash
# End-to-end: the flint client against a flintd this script starts on a free
# port. Every subcommand once (generate, chat, tokenize, detokenize, info,
# health, bench), the server's errors as "flint: CODE: message" with exit 1,
# usage errors with exit 2, and flintd draining on SIGTERM with exit 0.
#   flint_client_test.sh FLINTD FLINT MODEL
# Exits 77 (CTest: skipped) when MODEL is absent (scripts/fetch-model.sh).
set -euo pipefail
flintd=$1 flint=$2 model=$3
if [ ! -f "$model" ]; then
  echo "note: $model absent (scripts/fetch-model.sh); skipped"
  exit 77
fi

tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
failures=0 passed=0

check() {  # check NAME COMMAND...: counts, never stops the script
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else echo "FAIL: $name"; failures=$((failures + 1)); fi
}

# run_flint ARGS...: runs flint against the server; stdout, stderr and exit code in $tmp/{out,err}, $rc.
run_flint() {
  rc=0
  "$flint" --server "$server" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
}

# expect_status NAME CODE ARGS...: exit 1 and "flint: CODE: " on stderr.
expect_status() {
  local name=$1 code=$2; shift 2
  run_flint "$@"
  check "$name: exit code $rc (want 1)" test "$rc" -eq 1
  check "$name: stderr names $code" grep -q "^flint: $code: " "$tmp/err"
}

# ---- Start flintd on a free port and wait until it serves.
"$flintd" --model "$model" --host 127.0.0.1 --port 0 --http-port 0 --threads 2 2>"$tmp/flintd.log" &
pid=$!
server=""
for _ in $(seq 1 600); do
  server=$(sed -n 's/^flintd: serving on \([0-9.]*:[0-9]*\)$/\1/p' "$tmp/flintd.log" | head -n 1)
  [ -n "$server" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "FAIL: flintd exited before serving:"; cat "$tmp/flintd.log"; exit 1
  fi
  sleep 0.2
done
if [ -z "$server" ]; then echo "FAIL: flintd did not print its serving line in 120 s"; cat "$tmp/flintd.log"; exit 1; fi
healthy=0
for _ in $(seq 1 100); do
  if "$flint" --server "$server" health >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.2
done
check "health SERVING within 20 s" test "$healthy" -eq 1
run_flint health
check "health exits 0" test "$rc" -eq 0
check "health prints SERVING" grep -qx SERVING "$tmp/out"

# ---- generate
run_flint generate --temperature 0 --max-tokens 8 "The capital of France is"
check "greedy generate exits 0" test "$rc" -eq 0
check "greedy generate prints text" grep -q '[^[:space:]]' "$tmp/out"
cp "$tmp/out" "$tmp/greedy"
run_flint generate --temperature 0 --max-tokens 8 "The capital of France is"
check "greedy generate repeats itself" cmp -s "$tmp/out" "$tmp/greedy"

run_flint generate --seed 7 --temperature 0.9 --max-tokens 16 "Once upon a time"
cp "$tmp/out" "$tmp/seed_a"
run_flint generate --seed 7 --temperature 0.9 --max-tokens 16 "Once upon a time"
check "same seed, same text" cmp -s "$tmp/out" "$tmp/seed_a"
check "seeded text is not empty" grep -q '[^[:space:]]' "$tmp/out"

run_flint generate -v --temperature 0 --max-tokens 4 --ignore-eos "Hello"
check "-v reports the finish" grep -q "^finish: length" "$tmp/err"
check "-v reports the tokens" grep -q "completion 4 " "$tmp/err"
check "-v reports TTFT" grep -q "ttft [0-9.]* ms" "$tmp/err"

run_flint generate --chat --system "You are terse." --temperature 0 --max-tokens 16 "What is the capital of France?"
check "generate --chat exits 0" test "$rc" -eq 0
check "generate --chat prints an answer" grep -q '[^[:space:]]' "$tmp/out"

run_flint generate --json --temperature 0 --max-tokens 3 --ignore-eos "Hello"
check "--json exits 0" test "$rc" -eq 0
check "--json streams deltas" grep -q '^{"delta":{' "$tmp/out"
check "--json ends with finished" sh -c "tail -n 1 '$tmp/out' | grep -q '^{\"finished\":{.*\"reason\":\"length\"'"

run_flint generate --temperature 0 --max-tokens 32 --stop "." "The capital of France is Paris"
check "--stop exits 0" test "$rc" -eq 0
check "--stop text is not sent" sh -c "! grep -q '\.' '$tmp/out'"

# ---- The server's errors, and the client's own.
expect_status "max-tokens -1" INVALID_ARGUMENT generate --max-tokens -1 "Hello"
check "max-tokens -1: the message names the field" grep -q "max_tokens" "$tmp/err"
expect_status "temperature -1" INVALID_ARGUMENT generate --chat --temperature -1 "Hello"
check "temperature -1: the message names the field" grep -q "temperature" "$tmp/err"
expect_status "token id out of the vocabulary" INVALID_ARGUMENT detokenize 99999999
expect_status "a deadline too short" DEADLINE_EXCEEDED --timeout 0.001 generate --max-tokens 64 --ignore-eos "Hello"
run_flint generate
check "no prompt: usage error (exit 2)" test "$rc" -eq 2
run_flint generate --temperature warm "Hello"
check "a bad number: usage error (exit 2)" test "$rc" -eq 2
check "a bad number: the message says so" grep -q "not a number" "$tmp/err"
run_flint frobnicate
check "an unknown command: usage error (exit 2)" test "$rc" -eq 2

# ---- tokenize, detokenize, info
run_flint tokenize hello
check "tokenize exits 0" test "$rc" -eq 0
check "tokenize prints ids" grep -Eqx '[0-9]+( [0-9]+)*' "$tmp/out"
run_flint tokenize --no-special "hello world"
ids=$(cat "$tmp/out")
# shellcheck disable=SC2086  # the ids are separate arguments
run_flint detokenize $ids
check "detokenize inverts tokenize" grep -qx "hello world" "$tmp/out"
run_flint tokenize -v --chat "hi"
check "tokenize -v --chat lists tokens" grep -q "im_start" "$tmp/out"

run_flint info
check "info exits 0" test "$rc" -eq 0
check "info names the model" grep -q "$(basename "$model" .gguf)" "$tmp/out"
run_flint info --json
check "info --json has the vocabulary size" grep -q '"vocab_size":[1-9]' "$tmp/out"

# ---- chat with piped input
printf '/set temperature 0\n/set max_tokens 16\nHello\n/show\n/reset\n/quit\nnever sent\n' >"$tmp/chat_in"
rc=0
"$flint" --server "$server" chat <"$tmp/chat_in" >"$tmp/out" 2>"$tmp/err" || rc=$?
check "chat exits 0" test "$rc" -eq 0
check "chat prints a reply" grep -q '[^[:space:]]' "$tmp/out"
check "/show reflects /set" grep -q "temperature 0, .*max_tokens 16" "$tmp/out"
check "/show counts the history" grep -q "history: 2 messages" "$tmp/out"
check "chat stderr is clean" test ! -s "$tmp/err"
printf '/set temperature hot\n/frob\n' | "$flint" --server "$server" chat >"$tmp/out" 2>"$tmp/err" || true
check "chat reports a bad /set" grep -q "not a number" "$tmp/err"
check "chat reports an unknown command" grep -q "unknown command /frob" "$tmp/err"

# ---- bench
run_flint bench --streams 2 --requests 4 --prompt-tokens 16 --output-tokens 8
check "bench exits 0" test "$rc" -eq 0
check "bench prints requests/s" grep -q "requests/s  *[0-9]" "$tmp/out"
check "bench prints output tokens/s" grep -q "output tokens/s  *[0-9]" "$tmp/out"
check "bench prints TTFT percentiles" grep -q "TTFT (ms) *p50 *[0-9.]* *p99" "$tmp/out"
check "bench has no errors" grep -Eq "errors +0$" "$tmp/out"
run_flint bench --streams 2 --requests 3 --prompt-tokens 8 --output-tokens 4 --chat --json
check "bench --chat --json exits 0" test "$rc" -eq 0
check "bench --json completes every request" grep -q '"completed":3,' "$tmp/out"
check "bench --json reports inter-token latency" grep -q '"itl_ms":{"count":[1-9]' "$tmp/out"

# ---- A dead port, then SIGTERM.
rc=0
"$flint" --server 127.0.0.1:1 health >"$tmp/out" 2>"$tmp/err" || rc=$?
check "health of a dead port exits 1" test "$rc" -eq 1
check "health of a dead port says UNAVAILABLE" grep -q "^flint: UNAVAILABLE: " "$tmp/err"

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=""
check "flintd exits 0 on SIGTERM (got $rc)" test "$rc" -eq 0

echo "$passed passed, $failures failed"
if [ "$failures" -ne 0 ]; then echo "--- flintd log:"; tail -n 40 "$tmp/flintd.log"; fi
[ "$failures" -eq 0 ]
