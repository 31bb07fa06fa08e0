#!/usr/bin/env bash
# Build the kubeyolo step images PREFIX/yolo-<step>:TAG (one per step) from the compiled binaries,
# on top of the local base image (docker/base.sh; nothing is pulled from a registry). Every image
# runs as uid 65532, gid 0 (docker inspect: User 65532:0).
#
# Usage: docker/build.sh [--cuda] [--profile release|debug] [--prefix kubeyolo] [--tag dev]
#                        [--base IMAGE] [--target-dir DIR] [--no-cargo] [--no-strip] [STEP...]
#   --cuda        the CUDA flavour: binaries built with `--features kubeyolo/cuda` (toolkit from
#                 scripts/cuda_env.sh), base kubeyolo-base:bookworm-cuda13.0 (CUDA runtime
#                 libraries, no libcuda), tag TAG-cuda, default steps train test tune
#   --profile     which <target-dir>/<profile>/ binaries to package (default release)
#   --target-dir  cargo's target folder (default target, with --cuda $KUBEYOLO_CUDA_TARGET_DIR or
#                 target/cuda, so CPU and CUDA builds do not rebuild each other)
#   --no-cargo    do not run `cargo build` first (use the binaries as they are)
#   --no-strip    keep debug info in the packaged binaries
#   STEP...       subset of: verify distribution plot train test tune (default: all; --cuda: train test tune)
# Steps whose binary does not exist are listed as missing and get no image (the docker runner
# then reports them missing too). Prints each image's size at the end.
# Example: docker/build.sh --tag 0.1.0 --prefix registry.example.com/kubeyolo && docker push ...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=release prefix=kubeyolo tag=dev base= cargo=1 strip=1 cuda=0 target_dir=
steps=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) cuda=1; shift;;
    --target-dir) target_dir=$2; shift 2;;
    --profile) profile=$2; shift 2;;
    --prefix) prefix=$2; shift 2;;
    --tag) tag=$2; shift 2;;
    --base) base=$2; shift 2;;
    --no-cargo) cargo=0; shift;;
    --no-strip) strip=0; shift;;
    -h|--help) sed -n '2,21p' "$0"; exit 0;;
    -*) echo "docker/build.sh: unknown option $1" >&2; exit 2;;
    *) steps+=("$1"); shift;;
  esac
done
if [ "$cuda" = 1 ]; then
  [ ${#steps[@]} -gt 0 ] || steps=(train test tune)
  tag="$tag-cuda" flavour=" - CUDA 13.0"
  base=${base:-kubeyolo-base:bookworm-cuda13.0}
  target_dir=${target_dir:-${KUBEYOLO_CUDA_TARGET_DIR:-$root/target/cuda}}
  eval "$("$root/scripts/cuda_env.sh")"
else
  [ ${#steps[@]} -gt 0 ] || steps=(verify distribution plot train test tune)
  flavour=""
  base=${base:-kubeyolo-base:bookworm-slim}
  target_dir=${target_dir:-${CARGO_TARGET_DIR:-$root/target}}
fi

if [ "$cargo" = 1 ]; then
  flag=(); [ "$profile" = release ] && flag=(--release); [ "$profile" != release ] && [ "$profile" != debug ] && flag=(--profile "$profile")
  if [ "$cuda" = 1 ]; then
    pkgs=()
    for step in "${steps[@]}"; do [ -d "$root/stages/$step" ] && pkgs+=(-p "yolo-$step"); done
    [ ${#pkgs[@]} -eq 0 ] || (cd "$root" && CARGO_TARGET_DIR="$target_dir" cargo build "${pkgs[@]}" --features kubeyolo/cuda "${flag[@]}")
  else
    (cd "$root" && CARGO_TARGET_DIR="$target_dir" cargo build --workspace --bins "${flag[@]}")
  fi
fi
if [ "$cuda" = 1 ]; then "$root/docker/base.sh" --cuda "$base"; else "$root/docker/base.sh" "$base"; fi

built=() missing=()
for step in "${steps[@]}"; do
  bin="$target_dir/$profile/yolo-$step"
  if [ ! -x "$bin" ]; then missing+=("$step"); echo "missing: $bin (not built or not implemented) - no image"; continue; fi
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp "$bin" "$ctx/yolo-$step"; chmod 0755 "$ctx/yolo-$step"
  if [ "$strip" = 1 ] && command -v strip >/dev/null; then strip --strip-debug "$ctx/yolo-$step"; fi
  cp "$root/docker/entrypoint.sh" "$ctx/entrypoint.sh"; chmod 0755 "$ctx/entrypoint.sh"
  sed -e "s/@STEP@/$step/g" -e "s/@FLAVOUR@/$flavour/g" "$root/docker/Dockerfile.step" > "$ctx/Dockerfile"
  image="$prefix/yolo-$step:$tag"
  docker build -q --build-arg "BASE=$base" -t "$image" "$ctx" >/dev/null
  if [ "$cuda" = 1 ] && command -v readelf >/dev/null; then
    # Every library the binary needs must be in the image, except the driver's libcuda.so.1.
    needed=$(readelf -d "$ctx/yolo-$step" | sed -nE 's/.*\(NEEDED\).*\[(.*)\]/\1/p' | grep -vx 'libcuda.so.1' | tr '\n' ' ')
    docker run --rm --entrypoint /bin/sh "$image" -c \
      'for so; do [ -e "/usr/local/cuda/lib64/$so" ] || [ -e "/usr/lib/x86_64-linux-gnu/$so" ] || { echo "$so"; exit 1; }; done' \
      sh $needed >"$ctx/missing" || { echo "docker/build.sh: $image lacks $(cat "$ctx/missing") (needed by yolo-$step)" >&2; exit 1; }
  fi
  rm -rf "$ctx"
  built+=("$image")
done

echo
printf '%-45s %10s  %s\n' image size user
for image in "$base" "${built[@]}"; do
  bytes=$(docker image inspect --format '{{.Size}}' "$image")
  user=$(docker image inspect --format '{{.Config.User}}' "$image")
  printf '%-45s %7.1f MB  %s\n' "$image" "$(awk "BEGIN { print $bytes / 1000000 }")" "${user:-root}"
done
[ ${#missing[@]} -eq 0 ] || echo "no image (binary missing): ${missing[*]}"
