"""hypercorn with the ASGI ``http.response.pathsend`` extension, answered with sendfile(2).

hypercorn sends only what the app hands it as ``http.response.body`` messages, so a blob
pulled through it is read into memory a chunk at a time (a copy), passed through hypercorn
and h11, and written to the socket by the event loop (another copy). For plain HTTP/1.1
connections this module lets the app hand over the file's path instead (as under granian):
h11 counts the file's length against the response's framing without touching its bytes (its
"data passthrough", made for this), and the connection sends the file from the page cache to
the socket with non-blocking sendfile(2) calls, each in a thread so that a cold file's disk
reads never hold up the event loop, waiting on the event loop whenever the socket is full.

hypercorn has no hook for this, so ``install()`` wraps four of its methods;
tests/test_hypercorn_sendfile.py fails if a hypercorn release changes what they rely on.
TLS and HTTP/2 connections are left as they are (no extension is offered to their requests).

With the pathsend extension comes one of ours, ``DROP_BEHIND``: a file sent with it set (a
first read of a file not in memory) has its pages dropped from the page cache a few MiB behind
the send, so the cache never holds more than a few MiB of it and reuses those pages at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import h11
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.events import Closed, RawData
from hypercorn.protocol.events import Body, Request
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.utils import suppress_body

from registry.api.v2.blobs import DROP_BEHIND, PATHSEND

MIB = 1024 * 1024
DROP_EVERY = 8 * MIB  # bytes sent between two drops of a first read's pages
DROP_LAG = 8 * MIB  # pages this close behind the send stay (the socket may still hold them)


@dataclass(frozen=True)
class FileSlice:
    """An open file's first ``size`` bytes, travelling through hypercorn and h11 in place of a
    body's bytes; ``drop_behind``: drop its pages from the page cache as they are sent."""

    fd: int
    size: int
    drop_behind: bool = False

    def __len__(self) -> int:
        return self.size


async def send_file(writer: asyncio.StreamWriter, piece: FileSlice) -> None:
    """Send ``piece`` on the writer's socket after what the transport holds already.

    The socket is used through descriptors of our own (``dup``), so that the transport closing
    its own (a reset seen by the reader) can never leave a number that is reused elsewhere.
    """
    transport = writer.transport
    if transport.get_write_buffer_size():  # the head (or an earlier answer) goes out first
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0)
        try:
            await writer.drain()
        finally:
            transport.set_write_buffer_limits(high=high, low=low)
    if transport.is_closing():  # its descriptor may be closed, and its number reused
        raise ConnectionResetError("the connection closed before a file was sent")
    loop = asyncio.get_running_loop()
    socket_fd = os.dup(transport.get_extra_info("socket").fileno())
    try:
        offset, end, dropped = 0, piece.size, 0
        while offset < end:
            if transport.is_closing():
                raise ConnectionResetError("the connection closed while a file was sent")
            drop_to = offset - DROP_LAG
            if not piece.drop_behind or drop_to - dropped < DROP_EVERY:
                drop_to = 0
            try:
                left = end - offset
                sent = await asyncio.to_thread(_send, socket_fd, piece.fd, offset, left, drop_to)
                dropped = max(dropped, drop_to)
            except BlockingIOError:
                await _writable(loop, socket_fd)
                continue
            if sent == 0:
                raise ConnectionAbortedError("the file ended before its length was sent")
            offset += sent
    finally:
        os.close(socket_fd)
        if piece.drop_behind:  # what the socket no longer holds
            os.posix_fadvise(piece.fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _send(socket_fd: int, fd: int, offset: int, count: int, drop_to: int) -> int:
    """sendfile(2), after dropping the file's pages before ``drop_to`` from the page cache.

    From the start each time: pages still queued on a socket were skipped the time before
    (the kernel keeps a page something else holds), and checking dropped ones costs little.
    """
    if drop_to:
        os.posix_fadvise(fd, 0, drop_to, os.POSIX_FADV_DONTNEED)
    return os.sendfile(socket_fd, fd, offset, count)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


Method = Callable[..., Coroutine[Any, Any, None]]


def install() -> None:
    """Offer ``http.response.pathsend`` on hypercorn's plain HTTP/1.1 (asyncio) connections."""
    if getattr(HTTPStream, "_registry_pathsend", False):
        return
    HTTPStream._registry_pathsend = True  # type: ignore[attr-defined]
    HTTPStream.handle = _offering_pathsend(HTTPStream.handle)  # type: ignore[method-assign]
    HTTPStream.app_send = _answering_pathsend(HTTPStream.app_send)  # type: ignore[method-assign]
    H11Protocol._send_h11_event = _passing_files(H11Protocol._send_h11_event)  # type: ignore[method-assign]
    TCPServer.protocol_send = _sending_files(TCPServer.protocol_send)  # type: ignore[method-assign]


def _offering_pathsend(handle: Method) -> Method:
    """``HTTPStream.handle``: a request over plain HTTP/1.1 is offered the extension."""

    async def wrapper(self: HTTPStream, event: Any) -> None:
        await handle(self, event)
        # the app was spawned as a task that has not run yet: its scope can still grow
        over_h11 = isinstance(getattr(self.send, "__self__", None), H11Protocol)
        if isinstance(event, Request) and over_h11 and self.scheme == "http" and not self.closed:
            self.scope["extensions"][PATHSEND] = {}
            self.scope["extensions"][DROP_BEHIND] = {}

    return wrapper


def _answering_pathsend(app_send: Method) -> Method:
    """``HTTPStream.app_send``: a pathsend message becomes the whole file as one body."""

    async def wrapper(self: HTTPStream, message: Any) -> None:
        offered = PATHSEND in self.scope.get("extensions", {})
        ours = message is not None and message["type"] == PATHSEND and offered
        if not ours or self.state != ASGIHTTPState.RESPONSE:
            await app_send(self, message)  # hypercorn's own error for a message it does not know
            return
        status = int(self.response["status"])
        fd = await asyncio.to_thread(os.open, message["path"], os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size and not suppress_body(self.scope["method"], status):
                drop_behind = bool(message.get(DROP_BEHIND))
                if drop_behind:  # read from the disk: the kernel's readahead, doubled
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                whole = FileSlice(fd, size, drop_behind)
                await self.send(Body(stream_id=self.stream_id, data=whole))  # type: ignore[arg-type]
        finally:
            os.close(fd)
        await app_send(self, {"type": "http.response.body", "body": b"", "more_body": False})

    return wrapper


def _passing_files(send_h11_event: Method) -> Method:
    """``H11Protocol._send_h11_event``: h11 frames a file by its length, not its bytes."""

    async def wrapper(self: H11Protocol, event: Any) -> None:
        if not (isinstance(event, h11.Data) and isinstance(event.data, FileSlice)):
            await send_h11_event(self, event)
            return
        connection = cast(h11.Connection, self.connection)
        try:
            pieces = connection.send_with_data_passthrough(event)
        except h11.LocalProtocolError:
            if connection.their_state != h11.ERROR:
                raise
            return
        for piece in pieces or ():  # [file] with Content-Length; [size line, file, CRLF] chunked
            await self.send(RawData(data=piece))

    return wrapper


def _sending_files(protocol_send: Method) -> Method:
    """``TCPServer.protocol_send``: a file travelling as raw data goes out with sendfile."""

    async def wrapper(self: TCPServer, event: Any) -> None:
        if not (isinstance(event, RawData) and isinstance(event.data, FileSlice)):
            await protocol_send(self, event)
            return
        async with self.send_lock:
            try:
                await send_file(self.writer, event.data)
            except (ConnectionError, RuntimeError):
                await self.protocol.handle(Closed())

    return wrapper
