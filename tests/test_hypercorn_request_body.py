"""hypercorn handing request bodies to the app without h11 (``registry.hypercorn_request_body``).

The readers are checked against h11 itself (every way of cutting a body into two reads, and
random cuts into many), then hypercorn is run in a thread of this process over real TCP, so
that the bytes h11 is given can be counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import h11
import pytest
from h11._readers import ChunkedReader

from registry.hypercorn_request_body import (
    GATHER,
    GATHER_AFTER,
    GATHER_TICK,
    Gathering,
    PieceReader,
    _h11_readers_known,
    take_chunked_body,
    take_sized_body,
)
from tests.hypercorn_in_thread import App, answer_lifespan, connect, hypercorn_serving

CHUNKED_HEAD = b"PUT /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def sized_head(length: int, extra: bytes = b"") -> bytes:
    return b"PUT /b HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (length, extra)


def chunked(body: bytes, sizes: list[int], extension_every: int = 0) -> bytes:
    """``body`` in chunks of the given sizes (cycled), a trailer field after the last chunk."""
    out, at, index = [], 0, 0
    while at < len(body):
        size = min(sizes[index % len(sizes)], len(body) - at)
        extension = b";note=x" if extension_every and index % extension_every == 0 else b""
        out.append(b"%x%s\r\n%s\r\n" % (size, extension, body[at : at + size]))
        at, index = at + size, index + 1
    return b"".join(out) + b"0\r\nX-Trailer: yes\r\n\r\n"


def read_like_the_patched_protocol(head: bytes, pieces: list[bytes]) -> tuple[bytes, int]:
    """(the body an h11 server connection yields, bytes given to h11) when each piece after
    ``head`` is read as ``hypercorn_request_body`` reads it: directly while h11 holds nothing."""
    connection = h11.Connection(h11.SERVER)
    received, given_to_h11, ended = [], 0, False

    def drain() -> None:
        nonlocal ended
        while (event := connection.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.Data):
                received.append(bytes(event.data))
            ended = ended or isinstance(event, h11.EndOfMessage)

    for piece in [head, *pieces]:
        reader = connection._reader
        if connection.their_state is h11.SEND_BODY and not connection._receive_buffer:
            if isinstance(reader, ChunkedReader):
                taken, piece = take_chunked_body(reader, piece)
            else:
                taken, piece = take_sized_body(reader, piece)  # type: ignore[arg-type]
            received.append(taken)
        if piece:
            connection.receive_data(piece)
            given_to_h11 += len(piece)
        drain()
    assert ended, "h11 did not see the end of the request"
    return b"".join(received), given_to_h11


def cuts(data: bytes, count: int, rng: random.Random) -> list[bytes]:
    """``data`` cut at ``count`` random places."""
    points = sorted(rng.sample(range(1, len(data)), count))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def test_the_h11_fields_kept_are_the_ones_this_h11_has() -> None:
    assert _h11_readers_known()


def test_a_chunked_body_cut_anywhere_in_two_reads_comes_out_whole() -> None:
    body = os.urandom(300)
    encoded = chunked(body, [1, 17, 100, 2], extension_every=3)
    for cut in range(len(encoded) + 1):
        got, _ = read_like_the_patched_protocol(CHUNKED_HEAD, [encoded[:cut], encoded[cut:]])
        assert got == body, cut


def test_a_chunked_body_cut_at_random_comes_out_whole_and_mostly_around_h11() -> None:
    rng = random.Random(7)
    body = os.urandom(2_000_000)
    encoded = chunked(body, [32768, 65536, 1, 4096, 77777])
    for _ in range(20):
        pieces = cuts(encoded, 40, rng)
        got, given_to_h11 = read_like_the_patched_protocol(CHUNKED_HEAD, pieces)
        assert got == body
        assert given_to_h11 < len(CHUNKED_HEAD) + len(encoded) // 10


def test_a_sized_body_cut_anywhere_comes_out_whole_and_the_next_request_is_read() -> None:
    body = os.urandom(200)
    following = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    stream = sized_head(len(body)) + body + following
    for cut in range(len(stream) + 1):
        got, _ = read_like_the_patched_protocol(b"", [stream[:cut], stream[cut:]])
        assert got == body, cut
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(sized_head(5))
    assert isinstance(connection.next_event(), h11.Request)
    taken, rest = take_sized_body(connection._reader, b"12345" + following)  # type: ignore[arg-type]
    assert (taken, rest) == (b"12345", following)


@pytest.mark.parametrize(
    ("bad", "taken", "left"),
    [
        (b"5\r\nabcdeXX", b"abcde", b"XX"),  # no CRLF after the chunk's data
        (b"zz\r\nabc\r\n", b"", b"zz\r\nabc\r\n"),  # not a size
        (b"5\r\nabcde\r\n-1\r\n", b"abcde", b"-1\r\n"),
    ],
    ids=["no CRLF after the data", "not a size", "a negative size"],
)
def test_a_malformed_chunk_is_left_to_h11_which_refuses_it(
    bad: bytes, taken: bytes, left: bytes
) -> None:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(CHUNKED_HEAD)
    assert isinstance(connection.next_event(), h11.Request)
    assert take_chunked_body(connection._reader, bad) == (taken, left)  # type: ignore[arg-type]
    connection.receive_data(left)
    with pytest.raises((h11.RemoteProtocolError, h11.LocalProtocolError)):
        while connection.next_event() is not h11.NEED_DATA:
            pass


# -- over real TCP ----------------------------------------------------------------------------


@pytest.fixture
def bytes_given_to_h11(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every piece of data h11 connections of this process are given."""
    given: list[int] = []
    original = h11.Connection.receive_data

    def counting(self: h11.Connection, data: bytes) -> None:
        given.append(len(data))
        original(self, data)

    monkeypatch.setattr(h11.Connection, "receive_data", counting)
    return given


@pytest.fixture
def pieces_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every piece connections' ``PieceReader`` handed on."""
    read: list[int] = []
    original = PieceReader.read

    async def counting(self: PieceReader, n: int = -1) -> bytes:
        piece = await original(self, n)
        read.append(len(piece))
        return piece

    monkeypatch.setattr(PieceReader, "read", counting)
    return read


def digest_app(seen: list[dict[str, Any]]) -> App:
    """Answers each request with the sha256 and size of its body and the messages it came in."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        hasher, size, sizes = hashlib.sha256(), 0, []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                seen.append({"disconnected": True, "size": size})
                return
            assert isinstance(message["body"], bytes)
            hasher.update(message["body"])
            size = size + len(message["body"])
            sizes.append(len(message["body"]))
            if not message.get("more_body"):
                break
        answer = {"path": scope["path"], "sha256": hasher.hexdigest(), "size": size}
        seen.append({**answer, "messages": len(sizes), "sizes": sizes})
        content = json.dumps(answer).encode()
        headers = [(b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    return app


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    with hypercorn_serving(digest_app(seen)) as url:
        yield url, seen


def send_slowly(sock: socket.socket, pieces: list[bytes]) -> None:
    """Each piece in a segment of its own, so that the server reads them one by one."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for piece in pieces:
        sock.sendall(piece)
        time.sleep(0.002)


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, Any]]]:
    """``count`` responses (status, JSON body) from the connection, in order."""
    sock.settimeout(10)
    received, answers = b"", list[tuple[int, dict[str, Any]]]()
    while len(answers) < count:
        while b"\r\n\r\n" not in received:
            more = sock.recv(65536)
            assert more, f"the connection closed after {len(answers)} answers"
            received += more
        head, received = received.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(fields.get(b"content-length", b"0"))
        while len(received) < length:
            received += sock.recv(65536)
        body, received = received[:length], received[length:]
        answers.append((int(lines[0].split()[1]), json.loads(body) if body else {}))
    return answers


def test_a_sized_body_reaches_the_app_as_read_without_passing_through_h11(
    server: tuple[str, list[dict[str, Any]]], bytes_given_to_h11: list[int], pieces_read: list[int]
) -> None:
    url, seen = server
    body = os.urandom(4 * 1024 * 1024)
    with connect(url) as sock:
        send_slowly(sock, [sized_head(len(body)), *cuts(body, 63, random.Random(1))])
        [(status, answer)] = read_answers(sock, 1)
    assert status == 200
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()
    assert sum(bytes_given_to_h11) < 64 * 1024  # the request head (and what came with it)
    assert sum(pieces_read) == len(sized_head(len(body))) + len(body)  # all through the reader
    assert seen[0]["messages"] >= 32  # one message a read, as read


def test_a_chunked_body_with_extensions_and_trailer_reaches_the_app_whole(
    server: tuple[str, list[dict[str, Any]]], bytes_given_to_h11: list[int]
) -> None:
    url, seen = server
    body = os.urandom(3 * 1024 * 1024 + 5)
    encoded = chunked(body, [32768, 1000, 7, 65536], extension_every=50)
    with connect(url) as sock:
        send_slowly(sock, [CHUNKED_HEAD, *cuts(encoded, 200, random.Random(2))])
        [(status, answer)] = read_answers(sock, 1)
    assert status == 200
    assert (answer["sha256"], answer["size"]) == (hashlib.sha256(body).hexdigest(), len(body))
    assert sum(bytes_given_to_h11) < len(encoded) // 10
    assert seen[0]["messages"] < 400  # chunks joined: a message a read, not a chunk


def test_pipelined_requests_after_bodies_are_answered_in_order(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = server
    first, second = os.urandom(100_000), os.urandom(70_000)
    stream = (
        sized_head(len(first))
        + first
        + CHUNKED_HEAD.replace(b"/b", b"/c")
        + chunked(second, [30000])
        + b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with connect(url) as sock:
        send_slowly(sock, cuts(stream, 30, random.Random(3)))
        answers = read_answers(sock, 3)
    assert [(status, answer["path"], answer["size"]) for status, answer in answers] == [
        (200, "/b", len(first)),
        (200, "/c", len(second)),
        (200, "/d", 0),
    ]
    assert answers[1][1]["sha256"] == hashlib.sha256(second).hexdigest()


def test_a_client_waiting_for_100_continue_is_answered_and_its_body_read(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = server
    body = os.urandom(500_000)
    with connect(url) as sock:
        sock.sendall(sized_head(len(body), b"Expect: 100-continue\r\n"))
        sock.settimeout(10)
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 ")
        send_slowly(sock, cuts(body, 10, random.Random(4)))
        [(status, answer)] = read_answers(sock, 1)
    assert (status, answer["sha256"]) == (200, hashlib.sha256(body).hexdigest())


@pytest.mark.parametrize(
    ("head", "bad"),
    [
        (CHUNKED_HEAD, b"zz\r\n"),  # not a size
        (CHUNKED_HEAD, b"4\r\nabcdXX4\r\n"),  # no CRLF after the chunk's data
    ],
    ids=["not a size", "no CRLF after the data"],
)
def test_a_malformed_chunked_body_ends_the_connection_without_an_answer_to_the_app(
    server: tuple[str, list[dict[str, Any]]], head: bytes, bad: bytes
) -> None:
    url, seen = server
    good = chunked(os.urandom(200_000), [32768])[: -len(b"0\r\nX-Trailer: yes\r\n\r\n")]
    with connect(url) as sock:
        send_slowly(sock, [head, good, bad])
        sock.settimeout(10)
        received = b""
        while more := sock.recv(65536):
            received += more
    assert not received or received.startswith(b"HTTP/1.1 400 ")
    assert all("sha256" not in answer for answer in seen)


def test_a_client_gone_in_the_middle_of_a_body_is_a_disconnect_and_the_server_serves_on(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = server
    with connect(url) as sock:
        send_slowly(sock, [sized_head(1_000_000), os.urandom(300_000)])
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [{"disconnected": True, "size": 300_000}]
    with connect(url) as sock:
        sock.sendall(sized_head(3) + b"abc")
        [(status, answer)] = read_answers(sock, 1)
    assert (status, answer["size"]) == (200, 3)


def paced(sock: socket.socket, pieces: list[bytes], seconds: float) -> None:
    """Each piece in a segment of its own, ``seconds`` apart (a client slower than the server)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for piece in pieces:
        sock.sendall(piece)
        time.sleep(seconds)


def split_like_docker(encoded: bytes) -> list[bytes]:
    """A chunked body cut as Go's HTTP client writes it: 4 KiB, then the rest of each chunk."""
    pieces, at = [], 0
    while at < len(encoded):
        pieces += [encoded[at : at + 4096], encoded[at + 4096 : at + 32774]]
        at += 32774  # a chunk: "8000" CRLF, 32 KiB, CRLF
    return [piece for piece in pieces if piece]


@pytest.mark.parametrize("framing", ["sized", "chunked"])
def test_a_large_body_written_in_small_pieces_reaches_the_app_in_gathered_ones(
    server: tuple[str, list[dict[str, Any]]], framing: str
) -> None:
    url, seen = server
    body = os.urandom(GATHER_AFTER + 3 * 1024 * 1024 + 5)
    if framing == "sized":
        head, pieces = sized_head(len(body)), cuts(body, len(body) // 16384, random.Random(5))
    else:
        head, pieces = CHUNKED_HEAD, split_like_docker(chunked(body, [32768]))
    with connect(url) as sock:
        sock.sendall(head)
        paced(sock, pieces, 0.0005)
        [(status, answer)] = read_answers(sock, 1)  # the end is read: no wait for more bytes
    assert (status, answer["size"]) == (200, len(body))
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()
    sizes = seen[0]["sizes"]
    after = sizes[next(i for i in range(len(sizes)) if sum(sizes[: i + 1]) >= GATHER_AFTER) + 1 :]
    written = 3 * 1024 * 1024 // (16384 if framing == "sized" else 16387)
    assert len(after) < written / 4  # pieces of ~16 KiB written, read 64 KiB and more at a time
    assert max(after) > GATHER // 2


def test_a_client_that_pauses_gets_its_bytes_read_without_waiting_for_a_gather(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = server
    first, tail = os.urandom(GATHER_AFTER + 300_000), [os.urandom(1000) for _ in range(20)]
    with connect(url) as sock:
        sock.sendall(sized_head(len(first) + 20_000) + first)
        paced(sock, tail, 4 * GATHER_TICK)  # 20 kB owed: not gathered whole, one by one
        [(status, answer)] = read_answers(sock, 1)
    assert (status, answer["size"]) == (200, len(first) + 20_000)
    assert seen[0]["sizes"].count(1000) >= 15


class SocketTransport(asyncio.Transport):
    """A transport that only offers its socket, as hypercorn's does to ``Gathering``."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"socket": self.sock}.get(name, default)

    def is_closing(self) -> bool:
        return False


def test_gathering_sets_the_socket_s_low_mark_by_what_the_body_owes_and_drops_it() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()

    def low_mark() -> int:
        return server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)

    async def run() -> list[int]:
        gathering = Gathering(SocketTransport(server))
        request, marks = object(), []
        gathering.taken(request, GATHER_AFTER - 1, None)
        marks.append(low_mark())  # a small body so far: every byte wakes the loop
        gathering.taken(request, 1, None)
        marks.append(low_mark())  # large, of unknown length
        gathering.taken(request, 100, 5000)
        marks.append(low_mark())  # never more than the body owes
        gathering.taken(request, 100, 0)
        marks.append(low_mark())  # over
        gathering.taken(object(), 100, None)
        marks.append(low_mark())  # another request: counted from its first byte
        gathering.taken(request, GATHER_AFTER, None)
        client.sendall(b"x" * 1000)  # and then no more
        await asyncio.sleep(GATHER_TICK / 2)
        marks.append(low_mark())
        await asyncio.sleep(GATHER_TICK * 4)
        marks.append(low_mark())  # no new bytes for a tick: what is held is handed over
        server.settimeout(5)  # (under the mark, a read would wait for it)
        assert len(server.recv(4096)) == 1000
        gathering.taken(request, 1000, None)
        await asyncio.sleep(GATHER_TICK * 4)
        marks.append(low_mark())  # nothing held: nothing to hand over, the mark stays
        gathering.stop()
        marks.append(low_mark())
        return marks

    try:
        marks = asyncio.run(run())
    finally:
        for sock in (client, server, listener):
            sock.close()
    assert marks == [1, GATHER, 5000, 1, 1, GATHER, 1, GATHER, 1]


# -- the connection's reader -------------------------------------------------------------------


class CountingTransport(asyncio.ReadTransport):
    """Counts the reader's pause_reading and resume_reading calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def test_the_reader_hands_on_the_pieces_received_themselves_and_keeps_earlier_bytes() -> None:
    async def run() -> None:
        reader = asyncio.StreamReader(limit=1000)
        reader.feed_data(b"GET / HTTP/1.1\r\n")  # received before hypercorn took the reader
        PieceReader.adopt(reader)
        first, second = os.urandom(300), os.urandom(700)
        reader.feed_data(first)
        reader.feed_data(second)
        assert await reader.read(4096) == b"GET / HTTP/1.1\r\n"
        assert await reader.read(4096) is first  # the very object: not a byte copied
        assert await reader.read(500) == second[:500]  # cut to what was asked, the rest kept
        assert await reader.read(4096) == second[500:]
        waiting = asyncio.ensure_future(reader.read(4096))
        await asyncio.sleep(0)
        assert not waiting.done() and not reader.at_eof()
        reader.feed_data(b"late")
        assert await waiting == b"late"
        reader.feed_eof()
        assert await reader.read(4096) == b""
        assert reader.at_eof()

    asyncio.run(run())


def test_the_reader_pauses_the_transport_past_twice_its_limit_and_resumes_under_it() -> None:
    async def run() -> None:
        reader = asyncio.StreamReader(limit=1000)
        transport = CountingTransport()
        reader.set_transport(transport)
        PieceReader.adopt(reader)
        for _ in range(3):
            reader.feed_data(b"x" * 800)
        assert transport.calls == ["pause"]  # 2,400 bytes held > 2,000
        await reader.read(4096)
        assert transport.calls == ["pause"]  # 1,600 still held > 1,000
        await reader.read(4096)
        assert transport.calls == ["pause", "resume"]

    asyncio.run(run())


def test_the_reader_raises_the_connection_error_and_refuses_line_reads() -> None:
    async def run() -> None:
        reader = asyncio.StreamReader()
        PieceReader.adopt(reader)
        waiting = asyncio.ensure_future(reader.read(10))
        await asyncio.sleep(0)
        reader.set_exception(ConnectionResetError("gone"))
        with pytest.raises(ConnectionResetError):
            await waiting
        with pytest.raises(NotImplementedError):
            await reader.readline()

    asyncio.run(run())
