#!/usr/bin/env bash
# Sets Flint up (scripts/setup.sh), then starts flintd with the default model in
# the background on 127.0.0.1:50051 and waits until it is SERVING. Its log goes
# to .cache/flintd.log. Extra arguments go to flintd (e.g. --port 50052).
# Does nothing but report when a flintd already serves on that port.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2

port=50051
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --port) port="${args[$((i + 1))]:-$port}" ;;
    --port=*) port="${args[$i]#--port=}" ;;
  esac
done

if build/client/flint --server "127.0.0.1:$port" health >/dev/null 2>&1; then
  echo "serve: flintd already serves on 127.0.0.1:$port" >&2
  exit 0
fi
mkdir -p .cache
nohup build/server/flintd --model models/SmolLM2-135M-Instruct.Q4_1.gguf "$@" >.cache/flintd.log 2>&1 &
pid=$!
if ! build/client/flint --server "127.0.0.1:$port" health --wait 120 >/dev/null 2>&1; then
  echo "serve: flintd did not become healthy; its log (.cache/flintd.log) ends with:" >&2
  tail -n 20 .cache/flintd.log >&2
  kill "$pid" 2>/dev/null || true
  exit 1
fi
echo "serve: flintd (pid $pid) serves on 127.0.0.1:$port; log in .cache/flintd.log; stop it with: kill $pid" >&2
