"""hypercorn answering the ASGI pathsend extension with sendfile(2), over real TCP on uvloop.

Each test runs hypercorn (patched by ``registry.hypercorn_sendfile.install``) in a thread of
this process, so that calls to ``os.sendfile`` and open descriptors can be counted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from config import Settings
from registry.api.v2.blobs import DROP_BEHIND, PATHSEND
from registry.app import create_app
from tests.helpers import evict, kept_in_memory, resident_bytes, sha256
from tests.hypercorn_in_thread import App, answer_lifespan, connect, hypercorn_serving

USER, PASSWORD = "tester", "s3cret-pass"
MIB = 1024 * 1024


def random_file(folder: Path, size: int) -> tuple[Path, bytes]:
    """A file of ``size`` random bytes in ``folder``, and its bytes."""
    path, data = folder / "blob", os.urandom(size)
    path.write_bytes(data)
    return path, data


def file_app(
    path: Path, offered: list[bool], length: bool = True, drop_behind: bool = False
) -> App:
    """Answers every request with the file by pathsend when offered, noting whether it was;
    ``drop_behind``: asking for its pages to be dropped behind the send."""
    content = path.read_bytes()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        offered.append(PATHSEND in scope["extensions"])
        headers = [(b"content-length", str(len(content)).encode())] if length else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if PATHSEND in scope["extensions"]:
            dropping = {DROP_BEHIND: True} if drop_behind else {}
            await send({"type": PATHSEND, "path": str(path), **dropping})
        else:
            await send({"type": "http.response.body", "body": content})

    return app


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes sent by each ``os.sendfile`` call of this process."""
    calls: list[int] = []
    original = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        sent = original(out_fd, in_fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


def read_response(
    sock: socket.socket, pause_after: int = 0, already: bytes = b""
) -> tuple[bytes, bytes]:
    """(head, body) of one Content-Length response, reading slowly for its first bytes;
    ``already``: what was received of it before."""
    received = already
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    pieces = [body]
    got = len(body)
    while got < length:
        piece = sock.recv(min(65536, length - got))
        assert piece, "the connection closed early"
        pieces.append(piece)
        got += len(piece)
        if got < pause_after:
            time.sleep(0.002)  # a slow reader: the server meets a full socket
    return head, b"".join(pieces)


def test_a_file_goes_out_by_sendfile_to_a_slow_reader_and_the_connection_lives_on(
    tmp_path: Path, sendfile_calls: list[int]
) -> None:
    path, data = random_file(tmp_path, 24 * 1024 * 1024 + 5)
    offered: list[bool] = []
    with (
        hypercorn_serving(file_app(path, offered)) as url,
        connect(url) as sock,
    ):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        for _ in range(2):  # the same connection serves again after a file
            sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = read_response(sock, pause_after=4 * 1024 * 1024)
            assert head.startswith(b"HTTP/1.1 200")
            assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert offered == [True, True]
    assert sum(sendfile_calls) == 2 * len(data)
    assert len(sendfile_calls) > 2  # the socket filled up: sent in several calls, in order


def test_a_first_read_leaves_only_the_last_few_mib_in_the_page_cache(
    tmp_path: Path, sendfile_calls: list[int]
) -> None:
    """Sent with ``DROP_BEHIND``, a file's pages go from the page cache a few MiB behind the
    send (at most DROP_EVERY + DROP_LAG, what one sendfile call sends, what the sockets hold
    and the kernel's readahead), and once it is sent all but those the socket still holds;
    without it, every page read stays cached."""
    path, data = random_file(tmp_path, 80 * MIB + 5)
    offered: list[bool] = []
    for drop_behind in (True, False):
        evict(path)
        with (
            hypercorn_serving(file_app(path, offered, drop_behind=drop_behind)) as url,
            connect(url) as sock,
        ):
            # what the sockets hold stays cached: not the 32 MiB a receive buffer can grow to
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MIB)
            sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while len(received) < 64 * MIB:  # then the reader stops: the socket fills up
                received += sock.recv(MIB)
            time.sleep(0.3)
            during = resident_bytes(path)
            _, body = read_response(sock, already=received)
            assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        after = resident_bytes(path)
        if drop_behind:
            assert during <= 40 * MIB, during  # without dropping: the 64 MiB and more
            assert after <= 16 * MIB, after
        else:
            assert during >= 64 * MIB and kept_in_memory(path)
    assert offered == [True, True]
    assert sum(sendfile_calls) == 2 * len(data)


def test_without_a_length_the_file_is_sent_chunked(
    tmp_path: Path, sendfile_calls: list[int]
) -> None:
    path, data = random_file(tmp_path, 3 * 1024 * 1024 + 1)
    with hypercorn_serving(file_app(path, [], length=False)) as url:
        response = httpx.get(f"{url}/blob")
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.content == data
        head = httpx.head(f"{url}/blob")
        assert head.status_code == 200 and head.content == b""
    assert sum(sendfile_calls) == len(data)  # the GET's; the HEAD sent no body


def test_readers_leaving_early_cost_no_descriptor_nor_error_and_others_are_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, data = random_file(tmp_path, 64 * 1024 * 1024)
    with hypercorn_serving(file_app(path, [])) as url:
        assert httpx.get(f"{url}/blob").content == data  # the server has started its threads
        idle = open_descriptors()
        # a reset as soon as the head arrives (before the file), or well into the file
        for wanted in (1, 4 * 1024 * 1024, 1, 4 * 1024 * 1024):
            with connect(url) as sock:
                sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
                received = 0
                while received < wanted:
                    received += len(sock.recv(1024 * 1024))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        assert httpx.get(f"{url}/blob").content == data
        deadline = time.monotonic() + 10
        while open_descriptors() > idle and time.monotonic() < deadline:
            time.sleep(0.05)  # the server closes each connection once it sees it end
        assert open_descriptors() <= idle
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def open_descriptors() -> int:
    """This process's open descriptors (the server's included: it runs in a thread here)."""
    return len(os.listdir("/proc/self/fd"))


def test_a_file_gone_before_it_is_sent_closes_that_connection_only(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 100_000)
    offered: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/gone":
            start = {"type": "http.response.start", "status": 200}
            await send({**start, "headers": [(b"content-length", b"100000")]})
            await send({"type": PATHSEND, "path": str(tmp_path / "missing")})
        else:
            await file_app(path, offered)(scope, receive, send)

    with hypercorn_serving(app) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{url}/gone")
        assert httpx.get(f"{url}/blob").content == b"x" * 100_000


def test_http2_requests_are_not_offered_the_extension(tmp_path: Path) -> None:
    path, _ = random_file(tmp_path, 100_000)
    offered: list[bool] = []
    with hypercorn_serving(file_app(path, offered)) as url:
        with httpx.Client(http1=False, http2=True) as client:  # h2c, prior knowledge
            response = client.get(f"{url}/blob")
            assert response.http_version == "HTTP/2"
            assert response.content == path.read_bytes()
        assert httpx.get(f"{url}/blob").content == path.read_bytes()
    assert offered == [False, True]


def test_the_registry_sends_whole_blobs_by_sendfile_caching_them_from_the_second_read(
    tmp_path: Path, sendfile_calls: list[int]
) -> None:
    """A blob not in memory goes out by sendfile on its first pull with its pages dropped
    behind the send (it may never be pulled again); read before, it goes out by sendfile and
    stays cached. Ranges are always streamed."""
    settings = Settings(
        data_dir=tmp_path / "data", username=USER, password=PASSWORD, _env_file=None
    )
    data = os.urandom(40 * MIB + 3)
    digest = sha256(data)
    with (
        hypercorn_serving(create_app(settings)) as url,
        httpx.Client(base_url=url, auth=(USER, PASSWORD), timeout=60) as client,
    ):
        location = client.post("/v2/send/file/blobs/uploads/").headers["location"]
        done = client.put(location, params={"digest": digest}, content=data)
        assert done.status_code == 201, done.text
        (stored,) = (tmp_path / "data").rglob(f"blobs/sha256/*/{digest.split(':')[1]}/data")
        evict(stored)
        first = client.get(f"/v2/send/file/blobs/{digest}")
        assert first.status_code == 200 and first.content == data
        assert sum(sendfile_calls) == len(data)
        assert resident_bytes(stored) <= 16 * MIB  # all but the last few MiB dropped
        ranged = client.get(f"/v2/send/file/blobs/{digest}", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == data[10:20]
        assert sum(sendfile_calls) == len(data)
        again = client.get(f"/v2/send/file/blobs/{digest}")
        assert again.status_code == 200 and again.content == data
        assert again.headers["docker-content-digest"] == digest
        assert kept_in_memory(stored)  # read before: kept
    assert sum(sendfile_calls) == 2 * len(data)
