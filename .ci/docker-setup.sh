#!/usr/bin/env bash
# Brings up a Docker engine and the local images the Docker tests use. Idempotent: every step
# is skipped when its result is already there.
#
#   1. installs docker.io and debootstrap (Debian packages) when missing
#   2. starts dockerd when no engine answers, and waits (bounded) until `docker info` works
#   3. builds benchflow/test-base:bookworm (debootstrap minbase + python3 + venv) once
#   4. builds benchflow/sim:latest from docker/sim.Dockerfile on that base, again only when the
#      hash of its sources changed (the hash is stored as the image label benchflow.source-hash)
#
# Runs as root on Debian 12, with CI=true and no stdin. There is no registry here, so nothing is
# pulled: the base comes from Debian's packages and Python wheels are downloaded on the host into a
# wheelhouse that the image build installs from, offline (docker/build-image.sh).
# Environment: DOCKER_SETUP_WAIT_S (default 60), DEBOOTSTRAP_MIRROR, BENCHFLOW_BASE_IMAGE.
# The steps are docker/build-test-base.sh and docker/build-image.sh, which also work on their own.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
BASE_IMAGE="${BENCHFLOW_BASE_IMAGE:-benchflow/test-base:bookworm}"
SIM_IMAGE="benchflow/sim:latest"
WAIT_S="${DOCKER_SETUP_WAIT_S:-60}"
DOCKERD_LOG=/var/log/dockerd.log
START=$SECONDS

log() { printf '[docker-setup +%ss] %s\n' "$((SECONDS - START))" "$*"; }
timed() {  # timed LABEL CMD...: runs CMD and says how long it took
  local label=$1 t0=$SECONDS
  shift
  "$@"
  log "$label took $((SECONDS - t0))s"
}

install_packages() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v debootstrap >/dev/null || need+=(debootstrap debian-archive-keyring)
  if [ ${#need[@]} -eq 0 ]; then
    log "docker.io and debootstrap already installed"
    return
  fi
  log "installing ${need[*]} with apt"
  apt-get update -q </dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" ca-certificates </dev/null
}

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

wait_engine() {  # wait_engine SECONDS: 0 when the engine answers within that time
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -lt $deadline ]; do
    engine_up && return 0
    sleep 1
  done
  return 1
}

start_dockerd() {
  if engine_up; then
    log "Docker engine already running"
    return
  fi
  log "starting dockerd (log: $DOCKERD_LOG)"
  # setsid: the engine outlives this script and the CI job's process group.
  setsid dockerd "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null &
  if ! wait_engine "$WAIT_S"; then
    log "dockerd did not answer within ${WAIT_S}s; last lines of $DOCKERD_LOG:"
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    exit 1
  fi
  log "Docker engine is up: $(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}')"
}

build_base() {
  if [ "$BASE_IMAGE" != "benchflow/test-base:bookworm" ]; then
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && { log "$BASE_IMAGE exists"; return; }
    log "base image $BASE_IMAGE is missing and only benchflow/test-base:bookworm can be made here"
    exit 1
  fi
  bash docker/build-test-base.sh --tag "$BASE_IMAGE"
}

build_sim() {
  log "building $SIM_IMAGE on $BASE_IMAGE (skipped when its sources are unchanged)"
  timed "sim image" bash docker/build-image.sh sim --base-image "$BASE_IMAGE" --tag "$SIM_IMAGE" --offline
}

timed "packages" install_packages
timed "dockerd start" start_dockerd
timed "base image" build_base
build_sim
log "done in $((SECONDS - START))s"
