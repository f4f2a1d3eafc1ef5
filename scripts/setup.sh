#!/usr/bin/env bash
# Sets Flint up on a fresh machine: Debian packages, the default model, and a
# Release build in build/ (CUDA parts too when nvcc is found).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fetch-model.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${FLINT_CMAKE_ARGS:-}
cmake --build build -j"$(nproc)"
