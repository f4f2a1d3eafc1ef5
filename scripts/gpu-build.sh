#!/usr/bin/env bash
# gpu-build.sh: builds, on this machine (no GPU needed), everything scripts/gpu-check.sh runs on the GPU machine,
# into build-gpu (CUDA on, sm_90a, FLINT_NATIVE off: the GPU machine's CPU runs the CPU references), bundles the
# libraries flintd needs there (scripts/bundle-libs.sh) and prints the paths to carry and their size (a device
# call carries at most 64 MiB).
#
#   scripts/gpu-build.sh            then, with the device tool: carry the printed paths and run
#                                   scripts/gpu-check.sh [--only STEP,...]
#   env: FLINT_BUILD_DIR (default build-gpu), JOBS (default nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FLINT_BUILD_DIR:-build-gpu}
JOBS=${JOBS:-$(nproc)}
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "gpu-build: no nvcc (the CUDA toolkit)" >&2; exit 1; }
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$BUILD" -G Ninja -DFLINT_CUDA=ON -DFLINT_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
# Every binary gpu-check.sh runs (its header lists them by step).
targets=(flint_gpu_tests flint_gpu_model_tests flint-run flintd gpu_baselines matmul_bench ops_bench attention_bench)
[ -f bench/engine_bench.cpp ] && targets+=(engine_bench)
cmake --build "$BUILD" -j"$JOBS" --target "${targets[@]}"
scripts/bundle-libs.sh "$BUILD/server/flintd" "$BUILD/lib" >/dev/null
carry=("$BUILD/tests/gpu" "$BUILD/bench" "$BUILD/server/flint-run" "$BUILD/server/flintd" "$BUILD/lib")
total=$(du -scb "${carry[@]}" | tail -1 | cut -f1)
echo "carry (JSON, for the device tool):"
printf '['; sep=""; for p in "${carry[@]}"; do printf '%s"%s"' "$sep" "$p"; sep=", "; done; printf ']\n'
echo "total $((total / 1024 / 1024)) MiB of the 64 MiB a call carries"
[ "$total" -lt $((64 * 1024 * 1024)) ] || { echo "gpu-build: over 64 MiB: carry fewer paths per call" >&2; exit 1; }
