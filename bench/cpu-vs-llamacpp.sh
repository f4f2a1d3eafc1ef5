#!/usr/bin/env bash
# Flint's CPU backend and llama.cpp on the same GGUF, same threads, in one run:
#   bench/cpu-vs-llamacpp.sh [MODEL] [THREADS]
# Needs build/bench/cpu_model_bench and a python3 with llama-cpp-python
# (PYTHON=/path/to/python to choose it).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
threads=${2:-$(nproc)}
py=${PYTHON:-python3}
tmp=$(mktemp -d)
build/bench/cpu_model_bench -m "$model" -t "$threads" --json "$tmp/flint.json"
"$py" bench/llama_cpp_reference.py -m "$model" -t "$threads" --json "$tmp/llama.json"
"$py" - "$tmp/flint.json" "$tmp/llama.json" <<'PY'
import json, sys
f, l = (json.load(open(p)) for p in sys.argv[1:])
print(f"\n{'':10} {'flint tok/s':>12} {'llama.cpp':>12} {'ratio':>8}")
for k in ("prefill", "decode"):
    a, b = f[k + "_tok_s"], l[k + "_tok_s"]
    print(f"{k:10} {a:12.1f} {b:12.1f} {a / b:8.2f}")
PY
rm -rf "$tmp"
