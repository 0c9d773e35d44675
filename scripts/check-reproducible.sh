#!/usr/bin/env bash
# Build the image twice from clean (no cache, nothing shared between the two builds) and
# compare the digests. Prints both; exits 1 if they differ.
#
#   scripts/check-reproducible.sh [--load TAG]
#
# --load TAG    afterwards, copy the first build into the docker daemon as TAG
# Environment:
#   BASE_IMAGE         base for the Dockerfile's BASE_IMAGE argument (default: the Dockerfile's)
#   SOURCE_DATE_EPOCH  default: the time of the last commit
#   BUILDER            podman (default when installed) or buildx
#   PLATFORM           buildx only, default linux/amd64
#   SOURCE, REVISION, VERSION   the OCI labels (default: the Dockerfile's, git HEAD, git describe)
#
# podman: each build gets its own empty storage (vfs) and `--timestamp SOURCE_DATE_EPOCH`,
# which sets every file time and creation time in the image to that epoch. A BASE_IMAGE that
# exists in the local docker daemon is copied in from there, otherwise it is pulled.
# buildx: `--no-cache` and an OCI output with `rewrite-timestamp=true` (BuildKit >= 0.13).
set -euo pipefail
cd "$(dirname "$0")/.."

LOAD=""
if [ "${1:-}" = "--load" ]; then LOAD=${2:?--load needs a tag}; fi
DOCKER=${DOCKER:-/usr/bin/docker}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
if [ -z "${BUILDER:-}" ]; then
  if command -v podman >/dev/null; then BUILDER=podman; else BUILDER=buildx; fi
fi
REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
VERSION=${VERSION:-$(git describe --tags --always 2>/dev/null || echo 0.0.0-dev)}

args=(--build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" --build-arg "REVISION=$REVISION"
  --build-arg "VERSION=$VERSION")
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ -n "${SOURCE:-}" ] && args+=(--build-arg "SOURCE=$SOURCE")
# A TLS-intercepting proxy's CA bundle reaches pip as a build secret, never the image.
cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$cert" ] && args+=(--secret "id=pip-cert,src=$cert")

work=$(mktemp -d /var/tmp/check-reproducible.XXXXXX)
# podman with the private, empty store of build number $1.
pod() {
  local n=$1
  shift
  podman --root "$work/$n/storage" --runroot "$work/$n/run" --storage-driver vfs \
    --events-backend none --cgroup-manager cgroupfs "$@"
}
cleanup() { if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$work"; else echo "kept $work" >&2; fi; }
trap cleanup EXIT

# Build number $1 in its own empty store; print "<manifest digest> <config digest>".
build_podman() {
  local n=$1
  mkdir -p "$work/$n"
  if [ -n "${BASE_IMAGE:-}" ] && "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    pod "$n" pull -q "docker-daemon:$BASE_IMAGE" >/dev/null
  fi
  # OCI format: podman's docker-format config records the random id and hostname of its build
  # container (the layers are the same either way); podman drops HEALTHCHECK from OCI configs.
  # One layer per stage (--layers=false) is much faster on vfs. The manifest is what a push to
  # a registry sends, so its digest is the image digest.
  pod "$n" build --quiet --no-cache --pull=never --layers=false --format oci \
    --network host --isolation chroot --timestamp "$SOURCE_DATE_EPOCH" "${args[@]}" \
    --iidfile "$work/$n/iid" -t "localhost/registry:reproducible-$n" . \
    >"$work/$n/build.log" 2>&1 || { cat "$work/$n/build.log" >&2; return 1; }
  pod "$n" push -q --format oci "localhost/registry:reproducible-$n" "dir:$work/$n/dir" \
    >/dev/null
  echo "sha256:$(sha256sum <"$work/$n/dir/manifest.json" | cut -d' ' -f1) $(cat "$work/$n/iid")"
}

# The digest of the one manifest in an OCI index.json read from stdin.
index_digest() {
  python3 -c 'import json, sys; print(json.load(sys.stdin)["manifests"][0]["digest"])'
}

build_buildx() {
  local n=$1
  mkdir -p "$work/$n"
  docker buildx build --no-cache --platform "${PLATFORM:-linux/amd64}" "${args[@]}" \
    --output "type=oci,dest=$work/$n/image.tar,rewrite-timestamp=true" . >&2
  echo "$(tar -xOf "$work/$n/image.tar" index.json | index_digest) -"
}

echo "building twice from clean with $BUILDER (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)" >&2
if [ "$BUILDER" = podman ]; then
  # Side by side: each build has its own empty store, so they share nothing.
  build_podman 1 >"$work/result-1" &
  one=$!
  build_podman 2 >"$work/result-2" &
  two=$!
  wait "$one"
  wait "$two"
else
  # One after the other: BuildKit would merge identical steps running at the same time.
  build_buildx 1 >"$work/result-1"
  build_buildx 2 >"$work/result-2"
fi
read -r first first_id <"$work/result-1"
read -r second second_id <"$work/result-2"
echo "build 1: $first (config $first_id)"
echo "build 2: $second (config $second_id)"
if [ -n "$LOAD" ] && [ "$BUILDER" = podman ]; then
  pod 1 push -q localhost/registry:reproducible-1 "docker-daemon:$LOAD"
  echo "loaded into docker as $LOAD" >&2
fi
if [ "$first" != "$second" ]; then
  echo "NOT reproducible: the two builds differ" >&2
  exit 1
fi
echo "reproducible: $first"
