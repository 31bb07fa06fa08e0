#!/usr/bin/env bash
# Build the local base image of the kubeyolo step images from Debian packages only — no
# registry is needed (or reachable): debootstrap a minimal bookworm into a folder, slim it, and
# `docker import` it.
#
# Usage: docker/base.sh [IMAGE]            (default kubeyolo-base:bookworm)
# Env:   KUBEYOLO_ROOTFS_CACHE  rootfs folder kept between runs (default /var/cache/kubeyolo/rootfs-bookworm);
#                               debootstrap (minutes) only runs when it is missing.
#        DEBIAN_MIRROR          (default http://deb.debian.org/debian)
# Needs root (debootstrap, chroot) and the debootstrap package (apt-get install debootstrap).
set -euo pipefail
image=${1:-kubeyolo-base:bookworm}
rootfs=${KUBEYOLO_ROOTFS_CACHE:-/var/cache/kubeyolo/rootfs-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image exists"; exit 0
fi
command -v debootstrap >/dev/null || { echo "docker/base.sh: needs debootstrap (apt-get install -y debootstrap)" >&2; exit 2; }
if [ ! -x "$rootfs/bin/sh" ]; then
  echo "debootstrap --variant=minbase bookworm -> $rootfs (takes a few minutes)"
  mkdir -p "$(dirname "$rootfs")"
  debootstrap --variant=minbase bookworm "$rootfs.partial" "$mirror"
  rm -rf "$rootfs"; mv "$rootfs.partial" "$rootfs"
fi
# Slim copy: no package caches, indexes, docs, man pages or translations (not needed at run time).
tar -C "$rootfs" \
  --exclude=./var/cache/apt/archives --exclude=./var/lib/apt/lists \
  --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/locale --exclude=./usr/share/info \
  --exclude=./dev --exclude=./proc --exclude=./sys \
  -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/sh"]' \
    - "$image"
docker image ls "$image"
