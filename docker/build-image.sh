#!/usr/bin/env bash
# Builds the simulator image or the Prefect worker image from a small staged build context
# (only the files the image needs, never .venv or .benchflow), and skips the build when an image
# with the same tag was built from the same sources on the same base (label benchflow.source-hash).
#
#   docker/build-image.sh sim|worker [--tag TAG] [--base-image IMAGE] [--offline] [--force]
#
#   --base-image  the FROM image (default python:3.11-slim; the tests use benchflow/test-base:bookworm)
#   --offline     download the wheels on this host first (pip download) and install them inside the
#                 build with --no-index: for machines whose containers cannot reach a package index
#   --force       build even when the sources are unchanged
set -euo pipefail
cd "$(dirname "$0")/.."

KIND=${1:-}
shift || true
case "$KIND" in
  sim) TAG=benchflow/sim:latest ;;
  worker) TAG=benchflow/worker:latest ;;
  *) echo "usage: $0 sim|worker [--tag TAG] [--base-image IMAGE] [--offline] [--force]" >&2; exit 2 ;;
esac
BASE=python:3.11-slim
OFFLINE=0
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --base-image) BASE=$2; shift 2 ;;
    --offline) OFFLINE=1; shift ;;
    --force) FORCE=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
log() { printf '[build-image %s] %s\n' "$KIND" "$*"; }

CTX=$(mktemp -d /tmp/benchflow-build.XXXXXX)
trap 'rm -rf "$CTX" "$CTX.log"' EXIT

stage() {  # copies the files the image needs, in the repository's layout
  mkdir -p "$CTX/docker"
  cp docker/"$KIND".Dockerfile docker/sim-requirements.txt "$CTX/docker/"
  cp pyproject.toml "$CTX/"
  if [ -f README.md ]; then cp README.md "$CTX/"; else echo "benchflow" >"$CTX/README.md"; fi
  local dirs=(benchflow sql)  # sql/: data files of the package (pyproject [tool.setuptools.data-files])
  [ "$KIND" = worker ] && dirs+=(flows tasks deployments)
  for d in "${dirs[@]}"; do
    mkdir -p "$CTX/$d"; [ -d "$d" ] || continue
    tar -c --exclude=__pycache__ --exclude='*.pyc' "$d" | tar -x -C "$CTX"
  done
}

source_hash() {  # the image's inputs: the staged files, the base image id, the kind
  local base_id
  base_id=$(docker image inspect -f '{{.Id}}' "$BASE" 2>/dev/null || echo "$BASE")
  { (cd "$CTX" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); echo "$base_id $KIND"; } \
    | sha256sum | cut -c1-16
}

requirements() {  # what the wheelhouse needs: run-time deps plus the build backend
  if [ "$KIND" = sim ]; then
    grep -v '^\s*#' docker/sim-requirements.txt | grep -v '^\s*$'
  else
    "$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))'
  fi
  "$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))'
}

pick_python() {  # pick_python X.Y.Z: a host Python with pip of exactly that version, else nothing
  local c
  for c in "$PYTHON" /usr/bin/python3 "python${1%.*}" python3; do
    command -v "$c" >/dev/null 2>&1 || continue
    if [ "$("$c" -c 'import sys, pip; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)" = "$1" ]; then
      echo "$c"
      return
    fi
  done
}

wheelhouse() {  # downloads wheels for the base image's Python into the build context
  local dest="$CTX/docker/wheelhouse" image_py py extra=()
  mkdir -p "$dest"
  image_py=$(docker run --rm --entrypoint python3 "$BASE" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
  # Environment markers (python_full_version < "3.11.3") are evaluated for the interpreter that runs
  # pip, so prefer a host Python of exactly the image's version (Debian's /usr/bin/python3 for the
  # bookworm base); otherwise only the wheel tags can be targeted.
  py=$(pick_python "$image_py")
  if [ -z "$py" ]; then
    py=$PYTHON
    log "warning: no host Python $image_py with pip; markers are evaluated for $("$py" -V 2>&1)"
    extra=(--python-version "${image_py%.*}" --implementation cp --platform manylinux2014_x86_64
      --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 --platform linux_x86_64)
  fi
  log "downloading wheels for Python $image_py (with $py) into the build context"
  requirements >"$CTX/requirements.txt"
  # (pip's warnings about unusable extra index locations of the host's pip.conf are filtered out)
  { "$py" -m pip download -q --only-binary=:all: "${extra[@]}" -d "$dest" -r "$CTX/requirements.txt" \
      2>&1 1>&3 | { grep -v 'is ignored: it is neither a file nor a directory' || true; } >&2; } 3>&1
  log "wheelhouse: $(find "$dest" -name '*.whl' | wc -l) wheels, $(du -sh "$dest" | cut -f1)"
}

stage
HASH=$(source_hash)
CURRENT=$(docker image inspect -f '{{ index .Config.Labels "benchflow.source-hash" }}' "$TAG" 2>/dev/null || true)
if [ "$FORCE" = 0 ] && [ "$CURRENT" = "$HASH" ]; then
  log "$TAG is up to date (source hash $HASH)"
  exit 0
fi
log "building $TAG from docker/$KIND.Dockerfile on $BASE (source hash $HASH, was ${CURRENT:-none})"
[ "$OFFLINE" = 1 ] && wheelhouse
# DOCKER_BUILDKIT=0: the classic builder ships with every engine (Debian's docker.io has no buildx).
if ! DOCKER_BUILDKIT=0 docker build --force-rm -f "$CTX/docker/$KIND.Dockerfile" --build-arg BASE_IMAGE="$BASE" \
  --label benchflow.source-hash="$HASH" -t "$TAG" "$CTX" >"$CTX.log" 2>&1; then
  log "docker build failed; last lines:"
  tail -n 40 "$CTX.log" >&2
  exit 1
fi
# Old images of this kind are now dangling: remove them, and all but the newest build stage (the
# newest keeps the dependency layers cached for the next build).
docker image prune -f --filter label=benchflow.source-hash >/dev/null 2>&1 || true
docker images -q --filter dangling=true --filter "label=benchflow.build-stage=$KIND" | tail -n +2 \
  | xargs -r docker rmi >/dev/null 2>&1 || true
log "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
