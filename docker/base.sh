#!/usr/bin/env bash
# Build the local base image of the kubeyolo step images from Debian packages only — no registry
# is needed (or reachable). debootstrap a minimal bookworm into a cached folder, then `docker import`
# only what the step binaries need at run time: the files of libc6 and libgcc-s1 (no gconv
# modules), dash as /bin/sh (for the entrypoint), /etc/os-release, and a non-root user.
#
#   kubeyolo-base:bookworm-slim         the CPU images' base (~5 MB)
#   kubeyolo-base:bookworm-cuda13.0     --cuda: the same + libstdc++6 + the CUDA 13.0 runtime
#                                       libraries candle links (cublas, cublasLt, curand, nvrtc,
#                                       nvrtc-builtins, cudart) from the PyPI wheels in .venvs/cuda
#                                       (scripts/cuda_env.sh). Not libcuda: the NVIDIA container
#                                       toolkit mounts the driver's libcuda.so.1 at run time.
#
# Both run as USER 65532:0 (`nonroot`, primary group root, as OpenShift's arbitrary uids): a volume
# is writable when it is group-writable for gid 0 or for the pod's fsGroup (docs/kubeflow.md).
# /data and /home/nonroot in the image are 65532:0, mode 2775; /tmp is 1777.
#
# Usage: docker/base.sh [--cuda] [IMAGE]
# Env:   KUBEYOLO_ROOTFS_CACHE  rootfs folder kept between runs (default /var/cache/kubeyolo/rootfs-bookworm);
#                               debootstrap (~1 min) only runs when it is missing.
#        DEBIAN_MIRROR          (default http://deb.debian.org/debian)
#        KUBEYOLO_CUDA_VENV     the CUDA wheels' venv for --cuda (default .venvs/cuda)
# Needs root (debootstrap, chroot) and the debootstrap package (apt-get install debootstrap).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cuda=0
[ "${1:-}" = --cuda ] && { cuda=1; shift; }
# Bump when the content changes: an existing image with another version label is rebuilt.
version=2
if [ "$cuda" = 1 ]; then image=${1:-kubeyolo-base:bookworm-cuda13.0}; else image=${1:-kubeyolo-base:bookworm-slim}; fi
rootfs=${KUBEYOLO_ROOTFS_CACHE:-/var/cache/kubeyolo/rootfs-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
uid=65532

have=$(docker image inspect --format '{{index .Config.Labels "org.kubeyolo.base.version"}}' "$image" 2>/dev/null || true)
if [ "$have" = "$version" ]; then
  echo "base image $image exists"; exit 0
fi
command -v debootstrap >/dev/null || { echo "docker/base.sh: needs debootstrap (apt-get install -y debootstrap)" >&2; exit 2; }
if [ ! -x "$rootfs/bin/sh" ]; then
  echo "debootstrap --variant=minbase bookworm -> $rootfs (about a minute)"
  mkdir -p "$(dirname "$rootfs")"
  rm -rf "$rootfs.partial"
  debootstrap --variant=minbase bookworm "$rootfs.partial" "$mirror"
  rm -rf "$rootfs"; mv "$rootfs.partial" "$rootfs"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkgs=(libc6 libgcc-s1 dash)
[ "$cuda" = 1 ] && pkgs+=(libstdc++6)
# The packages' files, paths mapped onto the merged /usr (bookworm: /bin -> usr/bin, /lib -> usr/lib).
chroot "$rootfs" dpkg-query -L "${pkgs[@]}" \
  | grep '^/' | grep -v -e '^/usr/share/' -e '/gconv' -e '^/\.$' \
  | sed -E 's#^/(bin|sbin|lib|lib64)(/|$)#/usr/\1\2#; s#^/#./#' | sort -u > "$stage.list"
mkdir "$stage/root-fs"
fs="$stage/root-fs"
tar -C "$rootfs" --no-recursion -cf - -T "$stage.list" ./bin ./sbin ./lib ./lib64 \
    ./etc/os-release ./usr/lib/os-release ./etc/nsswitch.conf ./etc/debian_version | tar -C "$fs" -xf -
rm -f "$stage.list"
mkdir -p "$fs/tmp" "$fs/data" "$fs/home/nonroot" "$fs/etc" "$fs/usr/local/bin"
chmod 1777 "$fs/tmp"
cat > "$fs/etc/passwd" <<EOF
root:x:0:0:root:/root:/usr/sbin/nologin
nonroot:x:$uid:0:kubeyolo step:/home/nonroot:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat > "$fs/etc/group" <<EOF
root:x:0:
nonroot:x:$uid:
nogroup:x:65534:
EOF
chown "$uid:0" "$fs/data" "$fs/home/nonroot"
chmod 2775 "$fs/data" "$fs/home/nonroot"

changes=(
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  --change 'ENV LANG=C.UTF-8'
  --change 'ENV HOME=/home/nonroot'
  --change "USER $uid:0"
  --change 'WORKDIR /data'
  --change "LABEL org.kubeyolo.base.version=$version"
  --change 'CMD ["/bin/sh"]'
)
if [ "$cuda" = 1 ]; then
  venv=${KUBEYOLO_CUDA_VENV:-$root/.venvs/cuda}
  lib=$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13/lib 2>/dev/null | head -1)
  [ -n "$lib" ] || { echo "docker/base.sh --cuda: no CUDA wheels in $venv (run scripts/cuda_env.sh first)" >&2; exit 2; }
  mkdir -p "$fs/usr/local/cuda/lib64"
  for so in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libnvrtc-builtins.so.13.0 libcudart.so.13; do
    cp "$lib/$so" "$fs/usr/local/cuda/lib64/"
  done
  mkdir -p "$fs/etc/ld.so.conf.d"; echo /usr/local/cuda/lib64 > "$fs/etc/ld.so.conf.d/cuda.conf"
  changes+=(
    --change 'ENV LD_LIBRARY_PATH=/usr/local/cuda/lib64'
    # The NVIDIA container toolkit mounts libcuda only for the `compute` capability.
    --change 'ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility'
    # CUDA 13 needs an R580+ driver: the toolkit refuses to start the container on an older one.
    --change 'ENV NVIDIA_REQUIRE_CUDA=cuda>=13.0'
    # candle's kernels ship as PTX, which the driver compiles at a process's first CUDA call and
    # caches (~22 s and 9 MB on an H200, benchmarks/RESULTS.md). A new pod starts with an empty
    # home, so the cache lives on the data volume: the first GPU step on a volume pays it, later
    # steps and pods start in under a second. Where /data is not writable the driver recompiles.
    --change 'ENV CUDA_CACHE_PATH=/data/.cache/nv-kernels'
    --change 'LABEL org.kubeyolo.cuda=13.0'
  )
fi
tar -C "$fs" --numeric-owner -c . | docker import "${changes[@]}" - "$image" >/dev/null
docker image ls "$image"
