"""hypercorn passing request bodies from the socket to the app without copying them.

Under hypercorn each piece the event loop reads from a socket is copied three times by the
connection's ``asyncio.StreamReader`` (into its buffer, out as a slice, the slice into bytes),
then goes into h11's receive buffer (a copy), comes out of it as one ``Data`` event per chunk
of a chunked body (another copy), and is copied once more by hypercorn into the ASGI message.
An upload is nearly all body, so those copies and h11's work per chunk bounded the push
rate: docker sends its layers chunked, 32 KiB a chunk.

``install()`` gives each connection a ``PieceReader``, which hands on the pieces as the loop
read them. While a request's body is being received and h11 holds no unread bytes, ``install()`` has
hypercorn hand each piece read to the app itself, as one message: the piece as it is for a
``Content-Length`` body, the chunks' data joined for a chunked one. h11's body reader is kept
in the state it would have reached, so anything this does not take (the end of the body, a
chunk header with extensions, bytes it finds malformed, the next pipelined request) goes to
h11 as before and is checked and answered by h11 exactly as without this module.

Once a request has delivered ``GATHER_AFTER`` bytes of its body, the kernel is asked to wake
the event loop for that connection only when ``GATHER`` bytes are queued (``SO_RCVLOWAT``),
never more than the body still owes; a ``Gathering`` checks every ``GATHER_TICK`` that bytes
still arrive and lets the kernel hand over what it holds when they stop (the end of a chunked
body, a paused client) or when the oldest has waited ``GATHER_WAIT``. A client that writes
small pieces (docker writes each 32 KiB chunk in two) is otherwise read a piece at a time,
and the event loop's ~100 us for each piece, not the bytes, was most of the server's CPU
during a docker push.

hypercorn and h11 have no hook for this, so two hypercorn methods are wrapped, a stream
reader's private fields are used, and the private fields of h11's two body readers are kept;
tests/test_hypercorn_request_body.py fails if a release changes what this relies on, and
``install()`` leaves hypercorn as it is when h11's readers are not the ones this knows.
"""

from __future__ import annotations

import asyncio
import fcntl
import re
import socket
import struct
import termios
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

import h11
from h11._readers import ChunkedReader, ContentLengthReader
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.events import RawData
from hypercorn.protocol.events import Body
from hypercorn.protocol.h11 import STREAM_ID, H11Protocol

CHUNK_SIZE_LINE = re.compile(rb"[0-9A-Fa-f]{1,16}")
"""A chunk's size line as clients send it (no extensions, no spaces); h11 reads any other."""

LONGEST_SIZE_LINE = 18  # sixteen hex digits and CRLF

GATHER_AFTER = 1024 * 1024
"""Body bytes a request delivers before its reads are gathered: small bodies never wait."""
GATHER = 192 * 1024
"""The bytes the kernel holds before it wakes the event loop for a large body (under the
250 kB uvloop reads at once)."""
GATHER_TICK = 0.005
"""Seconds between two checks that a gathering connection's bytes still arrive."""
GATHER_WAIT = 0.05
"""Seconds after a read when the kernel hands over what it holds, however little."""

Method = Callable[..., Coroutine[Any, Any, None]]


def install() -> None:
    """Pass request bodies received over hypercorn's HTTP/1.1 connections straight to the app."""
    if getattr(H11Protocol, "_registry_direct_body", False) or not _h11_readers_known():
        return
    H11Protocol._registry_direct_body = True  # type: ignore[attr-defined]
    H11Protocol.handle = _passing_bodies(H11Protocol.handle)  # type: ignore[method-assign]
    TCPServer.__init__ = _reading_pieces(TCPServer.__init__)  # type: ignore[method-assign]


class PieceReader(asyncio.StreamReader):
    """A stream reader that hands on the pieces the transport gave it, as they are.

    Only ``read`` is offered (all hypercorn uses); the line and exact-size reads of
    ``asyncio.StreamReader`` work on a buffer this does not keep, so they refuse.
    """

    # asyncio.StreamReader's own fields, used as it uses them
    _buffer: bytearray
    _eof: bool
    _exception: BaseException | None
    _limit: int
    _paused: bool
    _transport: asyncio.ReadTransport | None
    # this class's: the pieces not read yet, and their bytes
    _pieces: deque[bytes]
    _held: int

    @classmethod
    def adopt(cls, reader: asyncio.StreamReader) -> None:
        """Turn a reader nobody reads from yet into one of these, keeping what it holds."""
        reader.__class__ = cls
        assert isinstance(reader, cls)
        held = bytes(reader._buffer)
        reader._buffer.clear()
        reader._pieces = deque([held] if held else [])
        reader._held = len(held)

    def feed_data(self, data: bytes) -> None:  # type: ignore[override]
        assert not self._eof, "feed_data after feed_eof"
        if not data:
            return
        self._pieces.append(data if type(data) is bytes else bytes(data))
        self._held += len(data)
        self._wakeup_waiter()  # type: ignore[attr-defined]
        if self._transport is not None and not self._paused and self._held > 2 * self._limit:
            self._transport.pause_reading()
            self._paused = True

    def _maybe_resume_transport(self) -> None:
        if self._paused and self._transport is not None and self._held <= self._limit:
            self._paused = False
            self._transport.resume_reading()

    def at_eof(self) -> bool:
        return self._eof and not self._pieces

    async def read(self, n: int = -1) -> bytes:
        """The next piece received, cut to ``n`` bytes (all pieces to the end if ``n < 0``)."""
        if self._exception is not None:
            raise self._exception
        if n < 0:
            pieces = []
            while piece := await self.read(self._limit):
                pieces.append(piece)
            return b"".join(pieces)
        if n == 0:
            return b""
        if not self._pieces and not self._eof:
            await self._wait_for_data("read")  # type: ignore[attr-defined]
        if not self._pieces:
            return b""
        piece = self._pieces.popleft()
        if len(piece) > n:
            self._pieces.appendleft(piece[n:])
            piece = piece[:n]
        self._held -= len(piece)
        self._maybe_resume_transport()
        return piece

    async def readuntil(self, separator: Any = b"\n") -> NoReturn:
        raise NotImplementedError("a PieceReader only reads pieces")

    async def readexactly(self, n: int) -> NoReturn:
        raise NotImplementedError("a PieceReader only reads pieces")


class Gathering:
    """The reads of one plain TCP connection's large bodies, gathered by the kernel
    (``SO_RCVLOWAT``) into pieces of ``GATHER`` bytes."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._socket = transport.get_extra_info("socket")
        self._loop = asyncio.get_running_loop()
        self._least = 1  # the socket's low mark
        self._request: object = None  # whose body the bytes below belong to
        self._received = 0
        self._read_at = 0.0
        self._queued = -1  # bytes the kernel held at the last check
        self._tick: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, transport: asyncio.BaseTransport) -> Gathering | None:
        """One for the transport, if it is plain TCP (TLS records are not counted in bytes)."""
        plain = transport.get_extra_info("ssl_object") is None
        return cls(transport) if plain and transport.get_extra_info("socket") else None

    def taken(self, request: object, size: int, owed: int | None) -> None:
        """``size`` bytes of ``request``'s body were read, and ``owed`` more are sure to come
        (``None``: the body goes on by an unknown length, ``0``: it is over)."""
        if request is not self._request:
            self._request, self._received = request, 0
        self._received += size
        self._read_at, self._queued = self._loop.time(), -1
        if owed == 0 or self._received < GATHER_AFTER:
            self._mark(1)
        else:
            self._mark(GATHER if owed is None else min(GATHER, owed))

    def stop(self) -> None:
        """Every byte wakes the event loop again."""
        if self._least != 1:
            self._mark(1)

    def _mark(self, least: int) -> None:
        if least != self._least and not self._transport.is_closing():
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, least)
            self._least = least  # lowered, the kernel wakes the loop at once for what it holds
        if self._least > 1 and self._tick is None:
            self._tick = self._loop.call_later(GATHER_TICK, self._check)

    def _check(self) -> None:
        self._tick = None
        if self._least == 1 or self._transport.is_closing():
            return
        queued = _queued_bytes(self._socket.fileno())
        stopped = queued and queued == self._queued  # (none queued: nothing to hand over)
        if stopped or self._loop.time() - self._read_at >= GATHER_WAIT:
            self._mark(1)
            return
        self._queued = queued
        self._tick = self._loop.call_later(GATHER_TICK, self._check)


def _queued_bytes(fd: int) -> int:
    """The bytes received on the socket and not read yet."""
    count: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return count


def _gathering(protocol: H11Protocol) -> Gathering | None:
    """The gathering of the protocol's connection (made on first use; None under TLS)."""
    try:
        gathering: Gathering | None = protocol._registry_gathering  # type: ignore[attr-defined]
    except AttributeError:
        server = getattr(protocol.send, "__self__", None)
        transport = server.writer.transport if isinstance(server, TCPServer) else None
        gathering = Gathering.of(transport) if transport is not None else None
        protocol._registry_gathering = gathering  # type: ignore[attr-defined]
    return gathering


def _stop_gathering(protocol: H11Protocol) -> None:
    """Every byte of the protocol's connection wakes the event loop again (h11 reads next)."""
    gathering: Gathering | None = getattr(protocol, "_registry_gathering", None)
    if gathering is not None:
        gathering.stop()


def _reading_pieces(init: Callable[..., None]) -> Callable[..., None]:
    """``TCPServer.__init__``: the connection's reader becomes a ``PieceReader``."""

    def wrapper(self: TCPServer, *args: Any) -> None:
        init(self, *args)
        PieceReader.adopt(self.reader)

    return wrapper


def _h11_readers_known() -> bool:
    """Whether h11's body readers keep their state in the fields this module keeps."""
    sized, chunked = ContentLengthReader(1), ChunkedReader()
    return (
        getattr(sized, "_remaining", None) == 1
        and getattr(chunked, "_bytes_in_chunk", None) == 0
        and getattr(chunked, "_bytes_to_discard", None) == b""
        and getattr(chunked, "_reading_trailer", None) is False
    )


def _passing_bodies(handle: Method) -> Method:
    """``H11Protocol.handle``: body bytes go to the stream; h11 gets the rest."""

    async def wrapper(self: H11Protocol, event: Any) -> None:
        connection, stream = self.connection, self.stream
        if not (
            isinstance(event, RawData)
            and type(connection) is h11.Connection
            and connection.their_state is h11.SEND_BODY
            and not connection.they_are_waiting_for_100_continue
            and not connection._receive_buffer  # h11 has bytes of its own to read first
            and stream is not None
        ):
            _stop_gathering(self)
            await handle(self, event)
            return
        reader = connection._reader
        owed: int | None  # body bytes sure to come (None: an unknown number)
        if type(reader) is ContentLengthReader:
            body, rest = take_sized_body(reader, event.data)
            owed = reader._remaining
        elif type(reader) is ChunkedReader:
            body, rest = take_chunked_body(reader, event.data)
            owed = None
        else:
            _stop_gathering(self)
            await handle(self, event)
            return
        if (gathering := _gathering(self)) is not None:
            gathering.taken(stream, len(body), 0 if rest else owed)
        if body:
            await stream.handle(Body(stream_id=STREAM_ID, data=body))
        if rest:
            await handle(self, RawData(data=rest))  # h11 reads on from where this stopped
        elif owed == 0:
            await self._handle_events()  # h11 ends the request

    return wrapper


def take_sized_body(reader: ContentLengthReader, data: bytes) -> tuple[bytes, bytes]:
    """(the body's bytes in ``data``, the bytes after the body), counted off ``reader``."""
    remaining = reader._remaining
    if len(data) <= remaining:
        reader._remaining = remaining - len(data)
        return data, b""
    reader._remaining = 0
    return data[:remaining], data[remaining:]


def take_chunked_body(reader: ChunkedReader, data: bytes) -> tuple[bytes, bytes]:
    """(the chunks' data in ``data`` joined, the bytes left for h11), as ``reader`` would read.

    Stops before anything but chunk data, the CRLF after it and a plain size line: the last
    chunk, a size line with extensions or cut off by the end of ``data``, a malformed byte.
    """
    view, pieces, at, end = memoryview(data), [], 0, len(data)
    while at < end and not reader._reading_trailer:
        expected = reader._bytes_to_discard
        if expected:
            got = data[at : at + len(expected)]
            if got != expected[: len(got)]:
                break  # h11 reports the malformed chunk end
            reader._bytes_to_discard = expected[len(got) :]
            at += len(got)
        elif reader._bytes_in_chunk:
            taken = min(reader._bytes_in_chunk, end - at)
            pieces.append(view[at : at + taken])
            at += taken
            reader._bytes_in_chunk -= taken
            if not reader._bytes_in_chunk:
                reader._bytes_to_discard = b"\r\n"
        else:
            line_end = data.find(b"\r\n", at, at + LONGEST_SIZE_LINE)
            if line_end < 0 or not CHUNK_SIZE_LINE.fullmatch(data, at, line_end):
                break
            size = int(data[at:line_end], 16)
            if size == 0:
                break  # the last chunk and its trailer: h11 ends the request
            reader._bytes_in_chunk = size
            at = line_end + 2
    whole = len(pieces) == 1 and len(pieces[0]) == end
    return (data if whole else b"".join(pieces)), data[at:]
