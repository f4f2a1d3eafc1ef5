#!/usr/bin/env bash
# Builds the images without a Docker engine and checks them: with Debian's buildah
# (chroot isolation, vfs storage), from a Debian bookworm base made here with debootstrap.
#  1. base:  debootstrap bookworm -> localhost/bookworm-base (cached in .cache/images/)
#  2. cpu:   docker/Dockerfile.cpu on that base -> localhost/flint:cpu; its config checked
#  3. serve: flintd from the image on loopback (the model copied in), then `flint health`,
#            `flint generate --chat` and HTTP /health, all from the image; SIGTERM drains it
#  4. cuda:  docker/Dockerfile with this machine's /usr/local/cuda on the bookworm base as
#            CUDA_DEVEL_IMAGE (and the bare base as CUDA_RUNTIME_IMAGE): nvcc configure,
#            compile and link for sm_80 + sm_90a; then the same serve check (no GPU: CPU)
# Slow (a debootstrap and two in-image builds: about half an hour on 2 cores), so it is not
# part of scripts/test.sh. Run as root: docker/test-image.sh [--skip-cuda]. Exits non-zero
# on the first failure; leaves no containers behind. Images stay in buildah's storage
# (buildah --storage-driver vfs images); the builds reuse their layers on a second run.
set -euo pipefail
cd "$(dirname "$0")/.."

skip_cuda=0
[ "${1:-}" = "--skip-cuda" ] && skip_cuda=1

export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
cache=.cache/images
model=SmolLM2-135M-Instruct.Q4_1.gguf
# debootstrap uses the Debian mirror apt uses here.
mirror=$(sed -n 's/^URIs: *//p; s/^deb \(http[^ ]*\) bookworm .*/\1/p' /etc/apt/sources.list.d/*.sources \
           /etc/apt/sources.list 2>/dev/null | grep '/debian$' || true)
mirror=${mirror%%$'\n'*}
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
mkdir -p "$cache"

containers=()
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for c in "${containers[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

t0=$SECONDS
stage_t=$SECONDS
pass() { echo "PASS $1 ($((SECONDS - stage_t)) s)"; stage_t=$SECONDS; }
fail() { echo "FAIL $1 ($((SECONDS - stage_t)) s)" >&2; exit 1; }
has_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# ---- 0. tools and the model
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || fail "tools: ${missing[*]} missing (apt-get install ${missing[*]})"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -f "models/$model" ] || scripts/fetch-model.sh
echo "test-image: buildah $(buildah --version | awk '{print $3}'), storage vfs, isolation chroot, mirror $mirror"

# ---- 1. the bookworm base
if ! has_image localhost/bookworm-base; then
  if [ ! -x "$cache/bookworm-rootfs/bin/sh" ]; then
    rm -rf "$cache/bookworm-rootfs"
    debootstrap --variant=minbase bookworm "$cache/bookworm-rootfs" "$mirror" > "$cache/debootstrap.log" 2>&1 ||
      { tail -n 20 "$cache/debootstrap.log" >&2; fail "base: debootstrap (log: $cache/debootstrap.log)"; }
  fi
  mkdir -p "$cache/base-ctx"
  tar -C "$cache/bookworm-rootfs" -cf "$cache/base-ctx/rootfs.tar" .
  printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n' > "$cache/base-ctx/Containerfile"
  buildah bud --quiet -f "$cache/base-ctx/Containerfile" -t localhost/bookworm-base "$cache/base-ctx" >/dev/null ||
    fail "base: import of the debootstrap tree"
  rm -f "$cache/base-ctx/rootfs.tar"
fi
pass "base: localhost/bookworm-base"

# build NAME DOCKERFILE ARGS...: buildah bud with the log in $cache/build-NAME.log
build() {
  local name=$1 file=$2; shift 2
  if ! buildah bud --format docker --layers --force-rm -f "$file" "$@" -t "localhost/flint:$name" . > "$cache/build-$name.log" 2>&1; then
    tail -n 30 "$cache/build-$name.log" >&2
    fail "$name: build of $file (log: $cache/build-$name.log)"
  fi
}

# check_config IMAGE: the settings a container runtime reads
check_config() {
  local cfg
  cfg=$(buildah inspect --type image --format \
    '{{.Docker.Config.User}}|{{.Docker.Config.Entrypoint}}|{{.Docker.Config.Cmd}}|{{.Docker.Config.StopSignal}}|{{.Docker.Config.Healthcheck.Test}}|{{range $p, $_ := .Docker.Config.ExposedPorts}}{{$p}} {{end}}' "$1")
  echo "  config: $cfg"
  case "$cfg" in
    "10001:10001|[flint-entrypoint]|"*"|SIGTERM|[CMD flint health --server 127.0.0.1:50051"*"|50051/tcp 8000/tcp ") ;;
    *) return 1 ;;
  esac
}

# serve NAME PORT: flintd from the image on 127.0.0.1:PORT (HTTP on PORT+1), answered through
# the image's flint from a second container, then drained with SIGTERM.
serve() {
  local name=$1 port=$2 http_port=$(($2 + 1)) server ctr client out log="$cache/flintd-$1.log"
  server=$(buildah from "localhost/flint:$name") && containers+=("$server")
  client=$(buildah from "localhost/flint:$name") && containers+=("$client")
  buildah copy --chown 10001:10001 "$server" "models/$model" /models/ >/dev/null
  buildah run "$server" -- flint-entrypoint --host 127.0.0.1 --port "$port" --http-port "$http_port" \
    --model "/models/$model" > "$log" 2>&1 &
  ctr=$!
  pids+=("$ctr")
  if ! buildah run "$client" -- flint health --server "127.0.0.1:$port" --wait 90; then
    tail -n 20 "$log" >&2
    return 1
  fi
  echo "  flint health: SERVING"
  out=$(buildah run "$client" -- flint generate --server "127.0.0.1:$port" --chat --max-tokens 16 --temperature 0 \
          "What is the capital of France?") || return 1
  echo "  flint generate --chat: $out"
  [ -n "$(echo "$out" | tr -d '[:space:]')" ] || return 1
  out=$(curl -fsS "http://127.0.0.1:$http_port/health") || return 1
  echo "  HTTP /health: $out"
  # SIGTERM to flintd itself (the child of buildah run in the chroot): it drains and exits 0.
  local flintd_pid
  flintd_pid=$(ps -o pid= --ppid "$ctr" | tr -d " " | head -n 1)
  while [ -n "$flintd_pid" ] && [ "$(ps -o comm= -p "$flintd_pid")" != flintd ]; do
    flintd_pid=$(ps -o pid= --ppid "$flintd_pid" | tr -d " " | head -n 1)
  done
  [ -n "$flintd_pid" ] || { echo "  flintd process not found under buildah run ($ctr)" >&2; return 1; }
  echo "  flintd runs as uid $(ps -o uid= -p "$flintd_pid" | tr -d ' ')"
  kill -TERM "$flintd_pid"
  wait "$ctr" || { echo "  flintd exited with $? after SIGTERM" >&2; tail -n 5 "$log" >&2; return 1; }
  echo "  SIGTERM: flintd drained and exited 0"
}

# ---- 2-3. the CPU image
build cpu docker/Dockerfile.cpu --build-arg BASE_IMAGE=localhost/bookworm-base
pass "cpu: build of docker/Dockerfile.cpu ($(buildah images --format '{{.Size}}' localhost/flint:cpu))"
check_config localhost/flint:cpu || fail "cpu: image config"
pass "cpu: image config (user, entrypoint, healthcheck, stop signal, ports)"
serve cpu 55051 || fail "cpu: flintd from the image serving on loopback"
pass "cpu: flintd from the image serves, streams an answer, drains"

# ---- 4. the CUDA image, with this machine's toolkit standing in for nvidia/cuda
if [ "$skip_cuda" = 1 ]; then
  echo "SKIP cuda: --skip-cuda"
  echo "test-image: all stages passed in $((SECONDS - t0)) s"
  exit 0
fi
[ -x /usr/local/cuda/bin/nvcc ] || fail "cuda: no /usr/local/cuda/bin/nvcc on this machine to put in a base image"
if ! has_image localhost/cuda-devel-local; then
  cuda_dir=$(readlink -f /usr/local/cuda)
  mkdir -p "$cache/cuda-ctx"
  # The compiler, headers, the runtime and cuBLAS (the configure step wants it for bench/); not
  # the other big libraries.
  tar -C "$(dirname "$cuda_dir")" -cf "$cache/cuda-ctx/cuda.tar" \
    --exclude='*/lib/libcudnn*' --exclude='*/lib/libcufft*' \
    --exclude='*/lib/libcusolver*' --exclude='*/lib/libcusparse*' --exclude='*/lib/libnccl*' \
    --exclude='*/lib/libcupti*' --exclude='*/lib/libnvperf*' --exclude='*/lib/libnvblas*' \
    --exclude='*/lib/libcurand*' --exclude='*/lib/libpcsamplingutil*' --exclude='*/lib/libcheckpoint*' \
    "$(basename "$cuda_dir")"
  printf 'FROM localhost/bookworm-base\nADD cuda.tar /usr/local/\nRUN ln -s %s /usr/local/cuda\nENV PATH=/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n' \
    "$(basename "$cuda_dir")" > "$cache/cuda-ctx/Containerfile"
  buildah bud --quiet -f "$cache/cuda-ctx/Containerfile" -t localhost/cuda-devel-local "$cache/cuda-ctx" >/dev/null ||
    fail "cuda: base image with /usr/local/cuda"
  rm -f "$cache/cuda-ctx/cuda.tar"
fi
pass "cuda: base localhost/cuda-devel-local ($(/usr/local/cuda/bin/nvcc --version | sed -n 's/.*release \([0-9.]*\).*/nvcc \1/p'))"
build cuda docker/Dockerfile --build-arg CUDA_DEVEL_IMAGE=localhost/cuda-devel-local \
  --build-arg CUDA_RUNTIME_IMAGE=localhost/bookworm-base
# The build's CMake settings, kept in the image: FLINT_CUDA=ON fails the configure without nvcc.
c=$(buildah from localhost/flint:cuda) && containers+=("$c")
info=$(buildah run "$c" -- cat /usr/local/share/flint/build-info.txt)
echo "$info" | sed 's/^/  /'
echo "$info" | grep -q '^FLINT_CUDA:STRING=ON' && echo "$info" | grep -q 'compute_80,code=sm_80.*compute_90a,code=sm_90a' ||
  fail "cuda: the image was not built with CUDA for sm_80 and sm_90a"
pass "cuda: build of docker/Dockerfile (CUDA ON, sm_80 + sm_90a; flintd and flint linked)"
check_config localhost/flint:cuda || fail "cuda: image config"
pass "cuda: image config"
serve cuda 56051 || fail "cuda: flintd from the image serving on loopback (no GPU here: --device auto runs on the CPU)"
pass "cuda: flintd from the CUDA image serves (on the CPU: no GPU here), streams an answer, drains"
echo "test-image: all stages passed in $((SECONDS - t0)) s"
