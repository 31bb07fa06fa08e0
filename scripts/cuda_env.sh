#!/usr/bin/env bash
# The CUDA 13.0 toolkit for `--features cuda` builds, from PyPI wheels — no GPU, no driver, no
# NVIDIA apt repository: installs requirements/cuda.txt into .venvs/cuda (scripts/venv.sh), makes
# the folder a CUDA root the build scripts understand, and prints the environment to eval.
#
# Usage: eval "$(scripts/cuda_env.sh)"
#        CARGO_TARGET_DIR=target/cuda cargo build --release -p yolo-train --features cuda
#
# What it prepares in .venvs/cuda/lib/python3*/site-packages/nvidia/cu13 (the CUDA root):
# - unversioned symlinks lib/libcublas.so -> libcublas.so.13 (and cublasLt, curand, nvrtc, cudart)
#   for the linker (candle/cudarc link these dynamically);
# - lib/stubs/libcuda.so (soname libcuda.so.1): empty functions for every driver symbol cudarc can
#   bind, as the CUDA toolkit's own stub, so the link succeeds without a driver. It is only for
#   linking: at run time the driver's libcuda.so.1 is used (the NVIDIA container toolkit mounts it),
#   and a CUDA build does not start at all where there is none.
# The printed variables: PATH (nvcc), CUDA_ROOT/CUDA_PATH/CUDA_HOME, CUDARC_CUDA_VERSION=13000
# (the wheels' version: requirements/cuda.txt says why 13.0), CUDA_COMPUTE_CAP (default 90 = H100/H200: there is no
# GPU to query; set it before calling for another GPU), LD_LIBRARY_PATH (the wheels' libraries,
# for running tests on a GPU machine; not the stub).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/venv.sh" cuda >/dev/null
cu=$(ls -d "$root"/.venvs/cuda/lib/python3*/site-packages/nvidia/cu13 | head -1)
[ -x "$cu/bin/nvcc" ] || { echo "scripts/cuda_env.sh: no nvcc in $cu/bin" >&2; exit 1; }

for so in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
  [ -e "$cu/lib/$so" ] || { echo "scripts/cuda_env.sh: missing $cu/lib/$so" >&2; exit 1; }
  ln -sfn "$so" "$cu/lib/${so%.so.*}.so"
done

# Stub libcuda.so from the driver symbols of the cudarc version in Cargo.lock.
cudarc_ver=$(awk '/^name = "cudarc"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$root/Cargo.lock")
stub="$cu/lib/stubs/libcuda.so"
if [ ! -f "$stub" ] || [ "$(cat "$stub.cudarc" 2>/dev/null)" != "$cudarc_ver" ]; then
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$cudarc_ver" 2>/dev/null | head -1 || true)
  if [ -z "$src" ]; then
    (cd "$root" && cargo fetch -q) >&2
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$cudarc_ver" | head -1)
  fi
  mkdir -p "$cu/lib/stubs"
  tmp=$(mktemp -d)
  # Every `pub unsafe fn cuXxx(` of the driver bindings; each stub returns CUDA_ERROR_STUB_LIBRARY (34).
  grep -ohE '^pub unsafe fn cu[A-Za-z0-9_]+\(' "$src/src/driver/sys/mod.rs" | sed -E 's/^pub unsafe fn ([A-Za-z0-9_]+)\(/\1/' \
    | sort -u | awk '{ printf "int %s(void) { return 34; }\n", $1 }' > "$tmp/stub.c"
  [ -s "$tmp/stub.c" ] || { echo "scripts/cuda_env.sh: no driver symbols found in $src" >&2; exit 1; }
  cc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$tmp/libcuda.so" "$tmp/stub.c"
  mv "$tmp/libcuda.so" "$stub"
  echo "$cudarc_ver" > "$stub.cudarc"
  echo "scripts/cuda_env.sh: stub $stub ($(wc -l < "$tmp/stub.c") driver symbols of cudarc $cudarc_ver)" >&2
  rm -rf "$tmp"
fi

cat <<EOF
export PATH="$cu/bin:\$PATH"
export CUDA_ROOT="$cu" CUDA_PATH="$cu" CUDA_HOME="$cu"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LD_LIBRARY_PATH="$cu/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
