"""The HTTP layer under each server the registry runs on (hypercorn, granian, uvicorn), over real
TCP.

What the server rather than the application decides is checked here: streamed request bodies,
whole-blob sends (granian reads them itself, by path), ranges, HEAD, header limits, errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import PASSWORD, USER, Server

pytestmark = pytest.mark.e2e


def sent_bytes(server: Server) -> float:
    metrics = httpx.get(f"{server.url}/metrics").text
    found = re.search(r"^registry_bytes_sent_total ([0-9.e+]+)$", metrics, re.MULTILINE)
    assert found, metrics
    return float(found[1])


def test_blob_round_trip_ranges_head_and_errors(registry_server: Server) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def body() -> Iterator[bytes]:  # no length known up front: Transfer-Encoding: chunked
        for offset in range(0, len(data), 300_000):
            yield data[offset : offset + 300_000]

    with httpx.Client(base_url=registry_server.url, auth=(USER, PASSWORD), timeout=60) as client:
        started = client.post("/v2/srv/app/blobs/uploads/")
        assert started.status_code == 202
        patched = client.patch(started.headers["location"], content=body())
        assert patched.status_code == 202, patched.text
        assert patched.headers["range"] == f"0-{len(data) - 1}"
        done = client.put(patched.headers["location"], params={"digest": digest})
        assert done.status_code == 201, done.text

        before = sent_bytes(registry_server)
        whole = client.get(f"/v2/srv/app/blobs/{digest}")
        assert whole.status_code == 200
        assert whole.headers["content-length"] == str(len(data))
        assert whole.headers["docker-content-digest"] == digest
        assert whole.headers["docker-distribution-api-version"] == "registry/2.0"
        assert hashlib.sha256(whole.content).hexdigest() == digest.split(":")[1]
        # every worker's counter is summed; the GET may have landed on any of them
        assert sent_bytes(registry_server) - before == len(data)

        ranged = client.get(f"/v2/srv/app/blobs/{digest}", headers={"Range": "bytes=1000-1999"})
        assert ranged.status_code == 206
        assert ranged.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
        assert ranged.content == data[1000:2000]
        tail = client.get(f"/v2/srv/app/blobs/{digest}", headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]

        head = client.head(f"/v2/srv/app/blobs/{digest}")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(data))

        missing = client.get(f"/v2/srv/app/blobs/sha256:{'0' * 64}")
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        outside = client.get("/v2/srv/app/blobs/sha256:..%2F..%2Fetc%2Fpasswd")
        assert outside.status_code in (400, 404)
        assert outside.json()["errors"][0]["code"] in ("DIGEST_INVALID", "NOT_FOUND")


def test_oversized_headers_are_refused_and_the_server_keeps_serving(
    registry_server: Server,
) -> None:
    with httpx.Client(base_url=registry_server.url, auth=(USER, PASSWORD)) as client:
        refused = client.get("/v2/", headers={"X-Padding": "a" * 15_000, "X-More": "b" * 3_000})
        assert refused.status_code == 431, refused.text
        assert refused.json()["errors"][0]["message"] == "request headers too large"
        assert client.get("/v2/").status_code == 200


def test_a_head_without_end_is_cut_off_and_the_server_keeps_serving(
    registry_server: Server,
) -> None:
    """Headers far past any limit: the server stops reading them instead of keeping them all."""
    with socket.create_connection(("127.0.0.1", registry_server.port), timeout=30) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: r\r\nX-Endless: ")
        sent = 0
        answer = b""
        try:
            while sent < 64 * 1024 * 1024:  # 64 MiB of one header value, or until refused
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:  # refused and closed while we were still sending
            pass
        with contextlib.suppress(OSError):
            answer = sock.recv(4096)
    assert sent < 64 * 1024 * 1024, "the server kept reading a 64 MiB header"
    assert answer == b"" or answer.split(b" ", 2)[1] in (b"400", b"413", b"431"), answer[:200]
    with httpx.Client(base_url=registry_server.url, auth=(USER, PASSWORD)) as client:
        assert client.get("/v2/").status_code == 200
