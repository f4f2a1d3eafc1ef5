#!/usr/bin/env bash
# gpu-build.sh: builds, on this machine (no GPU needed), everything scripts/gpu-check.sh runs on the GPU machine,
# into build-gpu (CUDA on, sm_90a, FLINT_NATIVE off: the GPU machine's CPU runs the CPU references), bundles the
# libraries flintd needs there (scripts/bundle-libs.sh), makes what the daemon's end-to-end suite needs there
# (build-gpu/e2e: the default model cut to 2 layers by scripts/trim-gguf.py, the whole one being over what a call
# carries, and the gRPC descriptors tests/e2e/flint_stubs.py builds its stubs from where grpc_tools is missing),
# and packs it all into one xz archive, build-gpu/carry.tar.xz, which gpu-check.sh unpacks first. It prints the
# path to carry and its size (a device call carries at most 64 MiB).
#
#   scripts/gpu-build.sh            then, with the device tool: carry ["build-gpu/carry.tar.xz"] and run
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
targets=(flint_gpu_tests flint_gpu_model_tests flint-run flintd flint gpu_baselines matmul_bench ops_bench attention_bench
         engine_bench engine_overhead_bench)
cmake --build "$BUILD" -j"$JOBS" --target "${targets[@]}"
scripts/bundle-libs.sh "$BUILD/server/flintd" "$BUILD/lib" >/dev/null
scripts/bundle-libs.sh "$BUILD/client/flint" "$BUILD/lib" >/dev/null
mkdir -p "$BUILD/e2e"
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$model" ]; then
  python3 scripts/trim-gguf.py "$model" "$BUILD/e2e/$(basename "$model")" --layers 2
else
  echo "gpu-build: no $model (scripts/fetch-model.sh): gpu-check's e2e_cuda step will have no model" >&2
fi
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
"$py" tests/e2e/flint_stubs.py --write-descriptors "$BUILD/e2e/flint.desc" ||
  echo "gpu-build: no gRPC descriptors (install tests/e2e/requirements.txt: scripts/setup.sh)" >&2
paths=("$BUILD/tests/gpu" "$BUILD/bench" "$BUILD/server/flint-run" "$BUILD/server/flintd" "$BUILD/client/flint"
       "$BUILD/lib" "$BUILD/e2e")
raw=$(du -scb "${paths[@]}" | tail -1 | cut -f1)
tar -cf - --exclude=CMakeFiles --exclude='*.cmake' "${paths[@]}" | xz -T"$JOBS" -6 > "$BUILD/carry.tar.xz"
total=$(stat -c %s "$BUILD/carry.tar.xz")
echo "carry (JSON, for the device tool): [\"$BUILD/carry.tar.xz\"]"
echo "$((raw / 1024 / 1024)) MiB packed into $((total / 1024 / 1024)) MiB, of the 64 MiB a call carries"
[ "$total" -lt $((64 * 1024 * 1024)) ] || { echo "gpu-build: over 64 MiB" >&2; exit 1; }
