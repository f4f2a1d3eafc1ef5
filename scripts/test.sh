#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every test with CTest, but the opt-in ones (label hf_compare:
# Flint against transformers, `ctest --test-dir build -L hf_compare`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" -LE hf_compare
