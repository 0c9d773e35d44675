"""Stateless replicas on one S3 bucket (a local moto endpoint).

Two registry processes share a bucket: an upload's chunks alternate between them, pulls go
to the other one; the real docker CLI pushes and pulls through a tiny round-robin proxy that
sends every request to the next replica; and registry:2 on the same bucket serves what we
wrote and we serve what it wrote.
"""

from __future__ import annotations

import http.client
import itertools
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    PASSWORD,
    USER,
    Docker,
    Server,
    start_distribution,
    start_registry,
)
from tests.helpers import OCI_MANIFEST, image_manifest, sha256
from tests.s3 import AWS_ENV, S3Endpoint

pytestmark = pytest.mark.e2e
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class RoundRobinProxy:
    """Forwards each HTTP request to the next backend in turn and records who served it."""

    def __init__(self, backends: list[Server]) -> None:
        self.backends = backends
        self.served: list[tuple[str, str, int]] = []  # (method, path, backend index)
        self._next = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def _forward(self) -> None:
                body = self._body()
                with proxy._lock:
                    index = proxy._next
                    proxy._next = (index + 1) % len(proxy.backends)
                    proxy.served.append((self.command, self.path, index))
                backend = proxy.backends[index]
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Host"] = self.headers.get("Host", backend.host)
                connection = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=120)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in HOP_BY_HOP:
                            self.send_header(key, value)
                    length = response.getheader("Content-Length", "0")  # HEAD: the GET's
                    self.send_header("Content-Length", str(len(payload)) if payload else length)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    connection.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def bucket(s3: S3Endpoint) -> str:
    return s3.new_bucket()


@pytest.fixture
def replicas(s3: S3Endpoint, bucket: str, tmp_path: Path) -> Iterator[list[Server]]:
    """Two registry processes on the same bucket and prefix (their data dirs differ)."""
    servers: list[Server] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            env = s3.env(bucket, prefix="shared")
            servers.append(
                start_registry(tmp_path / name / "data", tmp_path / f"{name}.log", **env)
            )
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_chunks_alternate_between_replicas_and_the_other_serves_the_image(
    replicas: list[Server],
) -> None:
    a, b = (httpx.Client(base_url=s.url, auth=(USER, PASSWORD), timeout=60) for s in replicas)
    layers = [os.urandom(6 * 1024 * 1024 + 11), os.urandom(1_000_003), os.urandom(7 * 1024 * 1024)]
    config = b'{"architecture":"amd64","os":"linux"}'
    with a, b:
        for index, blob in enumerate([config, *layers]):
            first, second = (a, b) if index % 2 else (b, a)
            location = first.post("/v2/multi/app/blobs/uploads/").headers["location"]
            cut = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
            for n, (start, end) in enumerate(itertools.pairwise(cut[:-1])):
                client = second if n % 2 == 0 else first
                patched = client.patch(
                    location,
                    content=blob[start:end],
                    headers={"Content-Range": f"{start}-{end - 1}"},
                )
                assert patched.status_code == 202, patched.text
                assert patched.headers["range"] == f"0-{end - 1}"
                location = patched.headers["location"]
            done = second.put(location, params={"digest": sha256(blob)}, content=blob[cut[2] :])
            assert done.status_code == 201, done.text
        manifest = image_manifest(config, layers)
        put = a.put(
            "/v2/multi/app/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        assert put.status_code == 201, put.text

        pulled = b.get("/v2/multi/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert pulled.content == manifest
        assert pulled.headers["docker-content-digest"] == sha256(manifest)
        for blob in [config, *layers]:
            got = b.get(f"/v2/multi/app/blobs/{sha256(blob)}")
            assert got.status_code == 200 and sha256(got.content) == sha256(blob)
        assert b.get("/v2/multi/app/tags/list").json()["tags"] == ["v1"]
        assert "multi/app" in a.get("/v2/_catalog").json()["repositories"]


def test_docker_through_a_round_robin_proxy(
    replicas: list[Server], docker: Docker, tmp_path: Path
) -> None:
    proxy = RoundRobinProxy(replicas)
    image = f"{proxy.host}/rr/app:{uuid.uuid4().hex[:8]}"
    try:
        docker.build_image(image, tmp_path / "context", layers=3)
        docker.login(proxy.host, USER, PASSWORD)
        digest, _ = docker.push(image)
        uploads = [i for method, path, i in proxy.served if method in ("PATCH", "PUT")]
        assert set(uploads) == {0, 1}, proxy.served
        docker.run("rmi", image)
        assert f"Digest: {digest}" in docker.run("pull", image).stdout
        assert {i for method, _, i in proxy.served if method == "GET"} == {0, 1}
    finally:
        docker.run("rmi", "-f", image, check=False)
        proxy.close()


def distribution_s3(s3: S3Endpoint, bucket: str, prefix: str) -> str:
    """registry:2's storage block for the same bucket and prefix (its ``rootdirectory``)."""
    return (
        "  s3:\n"
        f"    accesskey: {AWS_ENV['AWS_ACCESS_KEY_ID']}\n"
        f"    secretkey: {AWS_ENV['AWS_SECRET_ACCESS_KEY']}\n"
        "    region: us-east-1\n"
        f"    regionendpoint: {s3.url}\n"
        f"    bucket: {bucket}\n"
        f"    rootdirectory: /{prefix}\n"
        "    secure: false\n"
        "    v4auth: true\n"
    )


def test_registry2_and_we_share_a_bucket_both_ways(
    s3: S3Endpoint, bucket: str, docker: Docker, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    distribution = start_distribution(tmp_path, tmp_path, distribution_s3(s3, bucket, "shared"))
    ours = start_registry(tmp_path / "data", tmp_path / "ours.log", **s3.env(bucket, "shared"))
    first = f"{distribution.host}/interop/from-distribution:{suffix}"
    second = f"{ours.host}/interop/from-ours:{suffix}"
    mirrored = f"{ours.host}/interop/from-distribution:{suffix}"
    back = f"{distribution.host}/interop/from-ours:{suffix}"
    try:
        docker.build_image(first, tmp_path / "ctx1", layers=2)
        digest_one, _ = docker.push(first)
        docker.login(ours.host, USER, PASSWORD)
        assert f"Digest: {digest_one}" in docker.run("pull", mirrored).stdout
        tags = httpx.get(
            f"{ours.url}/v2/interop/from-distribution/tags/list", auth=(USER, PASSWORD)
        )
        assert tags.json()["tags"] == [suffix]

        docker.build_image(second, tmp_path / "ctx2", layers=2)
        digest_two, _ = docker.push(second)
        assert f"Digest: {digest_two}" in docker.run("pull", back).stdout
        catalog = httpx.get(f"{distribution.url}/v2/_catalog").json()["repositories"]
        assert {"interop/from-distribution", "interop/from-ours"} <= set(catalog)
    finally:
        for image in (first, second, mirrored, back):
            docker.run("rmi", "-f", image, check=False)
        distribution.stop()
        ours.stop()
