#!/usr/bin/env bash
# bundle-libs.sh BINARY DIR: copies the shared libraries BINARY needs (as ldd resolves them here) into DIR, except
# those every GPU machine has: glibc's, the C++ runtime (the GPU machine's is newer and compatible) and CUDA's
# (the GPU machine has CUDA 13's). Run it on the build machine; carry DIR with the binary and run the binary there
# with LD_LIBRARY_PATH=DIR (../shared/GPU.md). Prints what it copied and the total size.
set -eu
bin=${1:?usage: bundle-libs.sh BINARY DIR}
dir=${2:?usage: bundle-libs.sh BINARY DIR}
mkdir -p "$dir"
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|librt\.so|libpthread\.so|libresolv\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda\.so|libcudart\.so|libcublas|libcublasLt\.so|libnvidia)'
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
  if [[ "$name" =~ $skip ]]; then continue; fi
  cp -L "$path" "$dir/$name"
  echo "$name"
done
du -sh "$dir" | awk '{print "total: " $1}'
