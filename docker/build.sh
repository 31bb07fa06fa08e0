#!/usr/bin/env bash
# Build the kubeyolo step images PREFIX/yolo-<step>:TAG (one per step) from the compiled binaries,
# on top of the local Debian base image (docker/base.sh; nothing is pulled from a registry).
#
# Usage: docker/build.sh [--profile release|debug] [--prefix kubeyolo] [--tag dev]
#                        [--base kubeyolo-base:bookworm] [--no-cargo] [--no-strip] [STEP...]
#   --profile   which target/<profile>/ binaries to package (default release)
#   --no-cargo  do not run `cargo build --workspace --bins` first (use the binaries as they are)
#   --no-strip  keep debug info in the packaged binaries
#   STEP...     subset of: verify distribution plot train test tune (default: all)
# Steps whose binary does not exist are listed as missing and get no image (the docker runner
# then reports them missing too). Prints each image's size at the end.
# Example: docker/build.sh --tag 0.1.0 --prefix registry.example.com/kubeyolo && docker push ...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=release prefix=kubeyolo tag=dev base=kubeyolo-base:bookworm cargo=1 strip=1
steps=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2;;
    --prefix) prefix=$2; shift 2;;
    --tag) tag=$2; shift 2;;
    --base) base=$2; shift 2;;
    --no-cargo) cargo=0; shift;;
    --no-strip) strip=0; shift;;
    -h|--help) sed -n '2,15p' "$0"; exit 0;;
    -*) echo "docker/build.sh: unknown option $1" >&2; exit 2;;
    *) steps+=("$1"); shift;;
  esac
done
[ ${#steps[@]} -gt 0 ] || steps=(verify distribution plot train test tune)

if [ "$cargo" = 1 ]; then
  flag=(); [ "$profile" = release ] && flag=(--release); [ "$profile" != release ] && [ "$profile" != debug ] && flag=(--profile "$profile")
  (cd "$root" && cargo build --workspace --bins "${flag[@]}")
fi
"$root/docker/base.sh" "$base"

built=() missing=()
for step in "${steps[@]}"; do
  bin="$root/target/$profile/yolo-$step"
  if [ ! -x "$bin" ]; then missing+=("$step"); echo "missing: $bin (not built or not implemented) - no image"; continue; fi
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp "$bin" "$ctx/yolo-$step"
  if [ "$strip" = 1 ] && command -v strip >/dev/null; then strip --strip-debug "$ctx/yolo-$step"; fi
  cp "$root/docker/entrypoint.sh" "$ctx/entrypoint.sh"
  sed "s/@STEP@/$step/g" "$root/docker/Dockerfile.step" > "$ctx/Dockerfile"
  image="$prefix/yolo-$step:$tag"
  docker build -q --build-arg "BASE=$base" -t "$image" "$ctx" >/dev/null
  rm -rf "$ctx"
  built+=("$image")
done

echo
printf '%-45s %10s\n' image size
for image in "$base" "${built[@]}"; do
  bytes=$(docker image inspect --format '{{.Size}}' "$image")
  printf '%-45s %8d MB\n' "$image" $((bytes / 1000000))
done
[ ${#missing[@]} -eq 0 ] || echo "no image (binary missing): ${missing[*]}"
