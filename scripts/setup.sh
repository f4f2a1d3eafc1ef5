#!/usr/bin/env bash
# Sets Flint up on a fresh machine: Debian packages, the default model, the
# end-to-end tests' Python packages in .venv, and a Release build in build/
# (CUDA parts too when nvcc is found).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fetch-model.sh

# .venv: the end-to-end tests' Python packages, made once and re-installed only
# when tests/e2e/requirements.txt changes; wheels are kept in .cache/e2e-wheels.
requirements=tests/e2e/requirements.txt wheels=.cache/e2e-wheels
if ! { .venv/bin/python -c '' 2>/dev/null && sha256sum --check --status .venv/requirements.sha256 2>/dev/null; }; then
  .venv/bin/python -c '' 2>/dev/null || python3 -m venv --clear .venv
  pip_install() { .venv/bin/python -m pip install --quiet --no-index --find-links "$wheels" -r "$requirements"; }
  if ! pip_install 2>/dev/null; then
    .venv/bin/python -m pip download --quiet --dest "$wheels" -r "$requirements"
    pip_install
  fi
  sha256sum "$requirements" >.venv/requirements.sha256
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${FLINT_CMAKE_ARGS:-}
cmake --build build -j"$(nproc)"
