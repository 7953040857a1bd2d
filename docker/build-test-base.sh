#!/usr/bin/env bash
# Builds the local base image benchflow/test-base:bookworm without any registry: a Debian 12
# minbase root filesystem (python3 + python3-venv, no pip) made by debootstrap from Debian's
# packages, imported with `docker import`. Skipped when the image exists (--force rebuilds).
#
#   docker/build-test-base.sh [--tag TAG] [--force]       (root; needs debootstrap and an engine)
# Environment: DEBOOTSTRAP_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
TAG=benchflow/test-base:bookworm
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    *) echo "usage: $0 [--tag TAG] [--force]" >&2; exit 2 ;;
  esac
done
MIRROR="${DEBOOTSTRAP_MIRROR:-http://deb.debian.org/debian}"
log() { printf '[build-test-base] %s\n' "$*"; }

if [ "$FORCE" = 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  log "$TAG already exists"
  exit 0
fi
command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install -y debootstrap)"; exit 1; }
ROOTFS=$(mktemp -d /tmp/benchflow-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS" "$ROOTFS.log"' EXIT
t0=$SECONDS
log "debootstrap bookworm (minbase + python3, python3-venv) from $MIRROR"
if ! debootstrap --variant=minbase --include=python3,python3-venv bookworm "$ROOTFS" "$MIRROR" \
    >"$ROOTFS.log" 2>&1; then
  log "debootstrap failed; last lines:"
  tail -n 30 "$ROOTFS.log" >&2
  exit 1
fi
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
log "debootstrap took $((SECONDS - t0))s; importing as $TAG"
tar -C "$ROOTFS" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
log "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')) in $((SECONDS - t0))s"
