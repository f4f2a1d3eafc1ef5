#!/usr/bin/env bash
# flintd and llama.cpp's server (PyPI llama-cpp-python's llama_cpp.server) on the same
# GGUF, the same threads and the same load, in one run:
#   bench/serving-vs-llamacpp.sh [MODEL] [THREADS]
# For each S in STREAMS (default "1 4 16", with REQUESTS "8 8 32"): `flint bench` against
# flintd, then bench/llamacpp_server_bench.py against llama_cpp.server, each request a
# PROMPT_TOKENS-token prompt (default 128) and exactly OUTPUT_TOKENS greedy tokens (64).
# Each run has its own seed (SEED + S), so no run finds an earlier one's prompts cached.
# Prints one markdown table at the end; the raw JSON lines stay in OUT_DIR if set.
#
# Environment: PYTHON (a python3 with llama-cpp-python and its [server] extras),
# FLINTD, FLINT (the binaries), PORTS ("FLINTD_PORT LLAMA_PORT", default "50161 50162"),
# STREAMS, REQUESTS, PROMPT_TOKENS, OUTPUT_TOKENS, SEED, N_CTX (llama.cpp's context,
# default 8192), MAX_LOAD / LOAD_WAIT_S (wait up to LOAD_WAIT_S seconds, default 600,
# for the 1-minute load average to fall below MAX_LOAD, default 0.7, before starting;
# MAX_LOAD= skips the wait), OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
threads=${2:-$(nproc)}
py=${PYTHON:-python3}
flintd=${FLINTD:-build/server/flintd}
flint=${FLINT:-build/client/flint}
read -r port_flint port_llama <<<"${PORTS:-50161 50162}"
streams=(${STREAMS:-1 4 16})
requests=(${REQUESTS:-8 8 32})
prompt=${PROMPT_TOKENS:-128}
output=${OUTPUT_TOKENS:-64}
seed=${SEED:-$(date +%s)}
n_ctx=${N_CTX:-8192}
max_load=${MAX_LOAD-0.7}
load_wait=${LOAD_WAIT_S:-600}
warmup="Write one sentence about the sea."
if [ "${#streams[@]}" -ne "${#requests[@]}" ]; then
  echo "serving-vs-llamacpp: STREAMS and REQUESTS need as many entries" >&2
  exit 2
fi
out=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"

server_pid=
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=
}
cleanup() {
  stop_server
  [ -n "${OUT_DIR:-}" ] || rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load1() { cut -d' ' -f1 /proc/loadavg; }
# CPU seconds so far: the machine's busy time and steal (/proc/stat), the server's own
# (/proc/PID/stat) and this shell's reaped children's (the bench clients; `times` runs in
# this shell: call it as `times >"$out/times"; x=$(cpu_snapshot)`, since $(...) is a
# subshell whose `times` would not see them). What is busy beyond the server and the
# client is other work on the machine.
hz=$(getconf CLK_TCK)
cpu_snapshot() {
  echo "$(awk -v hz="$hz" '/^cpu /{print ($2+$3+$4+$7+$8)/hz, $9/hz}' /proc/stat)" \
    "$(awk -v hz="$hz" '{print ($14+$15)/hz}' "/proc/$server_pid/stat")" \
    "$(awk 'NR==2{split($1,u,/[ms]/); split($2,s,/[ms]/); print u[1]*60+u[2]+s[1]*60+s[2]}' "$out/times")"
}
# Labels one bench's JSON line with its engine, the 1-minute load average before it, and
# the share of the machine's CPU that other processes and the hypervisor (steal) took.
tag() {
  "$py" -c 'import json, os, sys
d = json.loads(sys.stdin.read())
b, a = [float(x) for x in sys.argv[3].split()], [float(x) for x in sys.argv[4].split()]
busy, steal, server, client = (a[k] - b[k] for k in range(4))
cap = d["wall_s"] * os.cpu_count()
d["engine"], d["load1_before"] = sys.argv[1], float(sys.argv[2])
d["cpu_pct"] = {"server": 100 * server / cap, "client": 100 * client / cap,
                "others": 100 * max(busy - server - client, 0) / cap, "steal": 100 * steal / cap}
print(json.dumps(d))' "$@"
}
if [ -n "$max_load" ]; then
  waited=0
  while awk -v l="$(load1)" -v m="$max_load" 'BEGIN { exit !(l > m) }'; do
    if [ "$waited" -ge "$load_wait" ]; then
      echo "serving-vs-llamacpp: load $(load1) still above $max_load after ${load_wait}s; measuring anyway" >&2
      break
    fi
    echo "serving-vs-llamacpp: load $(load1) > $max_load, waiting" >&2
    sleep 30
    waited=$((waited + 30))
  done
fi
echo "serving-vs-llamacpp: $model, $threads threads, prompt $prompt, output $output, seed base $seed" >&2

# flintd.
echo "serving-vs-llamacpp: flintd on :$port_flint (load $(load1))" >&2
"$flintd" --model "$model" --port "$port_flint" --threads "$threads" --quiet >"$out/flintd.log" 2>&1 &
server_pid=$!
"$flint" --server "127.0.0.1:$port_flint" health --wait 60 >/dev/null
# One short warm-up request per engine (neither bench warms up; its prompt shares nothing with theirs).
"$flint" --server "127.0.0.1:$port_flint" generate --temperature 0 --max-tokens 8 "$warmup" >/dev/null
for i in "${!streams[@]}"; do
  s=${streams[$i]} r=${requests[$i]}
  times >"$out/times"; l=$(load1) c0=$(cpu_snapshot)
  "$flint" --server "127.0.0.1:$port_flint" bench --streams "$s" --requests "$r" --prompt-tokens "$prompt" \
    --output-tokens "$output" --seed $((seed + s)) --json >"$out/run.json" || true
  times >"$out/times"; tag flintd "$l" "$c0" "$(cpu_snapshot)" <"$out/run.json" >>"$results" || echo "serving-vs-llamacpp: flint bench S=$s failed (see the table's notes)" >&2
  echo "  flintd S=$s done (load $(load1))" >&2
done
stop_server

# llama.cpp's server (llama-cpp-python). It runs one request at a time; interrupt_requests
# is off so that a waiting request does not cut the streaming one short.
echo "serving-vs-llamacpp: llama_cpp.server on :$port_llama (load $(load1))" >&2
"$py" -m llama_cpp.server --model "$model" --n_threads "$threads" --n_threads_batch "$threads" \
  --n_ctx "$n_ctx" --host 127.0.0.1 --port "$port_llama" --interrupt_requests False >"$out/llama.log" 2>&1 &
server_pid=$!
"$py" - "$port_llama" <<'PY'
import sys, time, urllib.request
for _ in range(240):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/models", timeout=2).read()
        sys.exit(0)
    except OSError:
        time.sleep(0.25)
sys.exit("serving-vs-llamacpp: llama_cpp.server did not come up in 60 s")
PY
"$py" - "$port_llama" "$warmup" <<'PY'
import json, sys, urllib.request
body = json.dumps({"prompt": sys.argv[2], "max_tokens": 8, "temperature": 0}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/completions", body,
                             {"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=600).read()
PY
for i in "${!streams[@]}"; do
  s=${streams[$i]} r=${requests[$i]}
  times >"$out/times"; l=$(load1) c0=$(cpu_snapshot)
  "$py" bench/llamacpp_server_bench.py --url "http://127.0.0.1:$port_llama" --streams "$s" --requests "$r" \
    --prompt-tokens "$prompt" --output-tokens "$output" --seed $((seed + s)) --json >"$out/run.json" || true
  times >"$out/times"; tag llama.cpp "$l" "$c0" "$(cpu_snapshot)" <"$out/run.json" >>"$results" || echo "serving-vs-llamacpp: llamacpp_server_bench S=$s failed (see the table's notes)" >&2
  echo "  llama.cpp S=$s done (load $(load1))" >&2
done
stop_server

"$py" - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows.sort(key=lambda d: (d["streams"], d["engine"] != "flintd"))
print("| streams | engine | req/s | out tok/s | TTFT p50/p99 ms | ITL p50/p99 ms | e2e p50 ms |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
notes = []
for d in rows:
    t, i, e = d["ttft_ms"], d["itl_ms"], d["e2e_ms"]
    print(f"| {d['streams']} | {d['engine']} | {d['requests_per_s']:.2f} | {d['output_tokens_per_s']:.1f} | "
          f"{t['p50']:.0f} / {t['p99']:.0f} | {i['p50']:.1f} / {i['p99']:.1f} | {e['p50']:.0f} |")
    if d["errors"] or d["short_outputs"]:
        notes.append(f"{d['engine']} S={d['streams']}: {d['errors']} errors, {d['short_outputs']} short outputs")
print("\nCPU during each run, % of all cores (server / client / other processes / steal), "
      "and the 1-minute load average before it:")
for d in rows:
    c = d["cpu_pct"]
    print(f"  {d['engine']} S={d['streams']}: {c['server']:.0f} / {c['client']:.0f} / {c['others']:.0f} / "
          f"{c['steal']:.0f}, load {d['load1_before']:.2f}")
for n in notes:
    print("note:", n)
PY
