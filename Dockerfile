# The registry as a container image, built reproducibly: the same commit, base image and
# SOURCE_DATE_EPOCH give the same image digest (see scripts/check-reproducible.sh, docs/deploy.md).
#
#   DOCKER_BUILDKIT=1 docker build --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) .
#
# BASE_IMAGE is python:3.12-slim-bookworm pinned by digest; any Debian-like image with python3
# (3.11+) and its venv module works, e.g. the one scripts/make-base-images.sh makes offline.
# Needs BuildKit (RUN --mount). Where PyPI sits behind a TLS-intercepting proxy, pass its CA
# bundle as a secret: --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE_IMAGE=python:3.12-slim-bookworm@sha256:782412e85d0f0984994c290652577d4018aff08145c85b262bb63dc0c7522254

# --- build: every runtime dependency from poetry.lock, hash-checked, into a wheelhouse ---------
FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY poetry.lock scripts/export-requirements.py /src/
RUN --mount=type=secret,id=pip-cert \
    set -eu; \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi; \
    python3 -m venv /opt/build-venv; \
    python3 /src/export-requirements.py /src/poetry.lock > /wheelhouse.txt; \
    /opt/build-venv/bin/pip wheel --quiet --require-hashes --only-binary=:all: \
        --index-url "$PIP_INDEX_URL" -r /wheelhouse.txt --wheel-dir /wheelhouse; \
    mv /wheelhouse.txt /wheelhouse/requirements.txt

# --- runtime: installs offline from the wheelhouse, no build tools, no pip ---------------------
FROM ${BASE_IMAGE}
ARG SOURCE_DATE_EPOCH=0
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/OWNER/registry
LABEL org.opencontainers.image.title="registry" \
      org.opencontainers.image.description="An OCI Distribution v1.1 container registry server" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    REGISTRY_HOST=0.0.0.0 REGISTRY_PORT=5000 REGISTRY_DATA_DIR=/data
COPY config.py /app/
COPY registry /app/registry
# pip runs from the build stage's venv (--python targets the new one); the user is written into
# /etc/passwd directly because useradd stamps the day into /etc/shadow. Byte-code is compiled
# with unchecked hashes (no source mtime inside), then every new file gets SOURCE_DATE_EPOCH.
RUN --mount=type=bind,from=build,source=/wheelhouse,target=/wheelhouse \
    --mount=type=bind,from=build,source=/opt/build-venv,target=/opt/build-venv \
    set -eu; \
    python3 -m venv --without-pip /opt/venv; \
    /opt/build-venv/bin/python -m pip --python /opt/venv/bin/python install --quiet \
        --no-index --find-links /wheelhouse --require-hashes --no-deps --no-compile \
        --no-cache-dir --disable-pip-version-check -r /wheelhouse/requirements.txt; \
    python3 -m compileall -q --invalidation-mode unchecked-hash /opt/venv /app; \
    echo 'registry:x:10001:10001:registry:/data:/usr/sbin/nologin' >> /etc/passwd; \
    echo 'registry:x:10001:' >> /etc/group; \
    mkdir -p /data; chown 10001:10001 /data; \
    find /opt/venv /app /data /etc/passwd /etc/group -exec touch -h -d "@${SOURCE_DATE_EPOCH}" {} +
USER 10001:10001
WORKDIR /app
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/status/health' % os.environ.get('REGISTRY_PORT', '5000'); sys.exit(urllib.request.urlopen(url, timeout=4).status != 200)"]
CMD ["python", "-m", "registry"]
