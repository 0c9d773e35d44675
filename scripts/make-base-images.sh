#!/usr/bin/env bash
# Make the two base images the Dockerfile and docker-compose-local.yaml can be pointed at, from
# Debian's own packages only (no image is pulled): `debootstrap --variant=minbase bookworm` plus
# Debian's python3 (for the registry image) or nginx (for the proxy), then `docker import`.
#
#   scripts/make-base-images.sh [--force]
#
# Prints the two image names. Existing images are kept unless --force is given. Environment:
#   PYTHON_BASE  (default registry-base/python:bookworm)
#   NGINX_BASE   (default registry-base/nginx:bookworm)
#   DEBIAN_MIRROR (default http://deb.debian.org/debian)
#   DOCKER       (default /usr/bin/docker)
set -euo pipefail

PYTHON_BASE=${PYTHON_BASE:-registry-base/python:bookworm}
NGINX_BASE=${NGINX_BASE:-registry-base/nginx:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DOCKER=${DOCKER:-/usr/bin/docker}
FORCE=false
[ "${1:-}" = "--force" ] && FORCE=true

for tool in debootstrap "$DOCKER"; do
  command -v "$tool" >/dev/null || { echo "make-base-images: $tool is not installed" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/base-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

# debootstrap into $1 with the extra packages $2, then trim what an image does not need.
bootstrap() {
  local root=$1 packages=$2
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$DEBIAN_MIRROR" \
    >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; return 1; }
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/log/* "$root"/tmp/*
}

# Import directory $1 as image $2 with the Dockerfile instructions in the remaining arguments.
import() {
  local root=$1 name=$2
  shift 2
  local changes=()
  for change in "$@"; do changes+=(--change "$change"); done
  tar --numeric-owner -C "$root" -c . | "$DOCKER" import "${changes[@]}" - "$name" >/dev/null
  echo "$name"
}

exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

pids=()
if $FORCE || ! exists "$PYTHON_BASE"; then
  # python3-venv brings ensurepip, so the build stage can make a virtualenv with pip.
  bootstrap "$work/python" python3,python3-venv,ca-certificates &
  pids+=($!)
fi
if $FORCE || ! exists "$NGINX_BASE"; then
  # curl is for the compose health check (the official nginx image ships it too).
  bootstrap "$work/nginx" nginx,curl,ca-certificates &
  pids+=($!)
fi
for pid in "${pids[@]}"; do wait "$pid"; done

if [ -d "$work/python" ]; then
  import "$work/python" "$PYTHON_BASE" \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENV LANG=C.UTF-8' 'CMD ["python3"]'
else
  echo "$PYTHON_BASE (kept)"
fi
if [ -d "$work/nginx" ]; then
  rm -f "$work"/nginx/etc/nginx/sites-enabled/default
  ln -sf /dev/stdout "$work"/nginx/var/log/nginx/access.log 2>/dev/null \
    || { mkdir -p "$work"/nginx/var/log/nginx && ln -sf /dev/stdout "$work"/nginx/var/log/nginx/access.log; }
  ln -sf /dev/stderr "$work"/nginx/var/log/nginx/error.log
  import "$work/nginx" "$NGINX_BASE" \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'EXPOSE 80' 'CMD ["nginx", "-g", "daemon off;"]'
else
  echo "$NGINX_BASE (kept)"
fi
