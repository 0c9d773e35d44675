"""hypercorn passing request bodies to the app without h11 touching their bytes.

Under hypercorn each piece read from a socket goes into h11's receive buffer (a copy), comes
out of it as one ``Data`` event per chunk of a chunked body (another copy), and is copied once
more by hypercorn into the ASGI message. An upload is nearly all body, so those copies and
h11's work per chunk bounded the push rate: docker sends its layers chunked, 32 KiB a chunk.

While a request's body is being received and h11 holds no unread bytes, ``install()`` has
hypercorn hand each piece read to the app itself, as one message: the piece as it is for a
``Content-Length`` body, the chunks' data joined for a chunked one. h11's body reader is kept
in the state it would have reached, so anything this does not take (the end of the body, a
chunk header with extensions, bytes it finds malformed, the next pipelined request) goes to
h11 as before and is checked and answered by h11 exactly as without this module.

hypercorn and h11 have no hook for this, so one hypercorn method is wrapped and two of h11's
private reader fields are kept; tests/test_hypercorn_request_body.py fails if a release of
either changes what this relies on, and ``install()`` leaves hypercorn as it is when the
readers are not the ones this knows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

import h11
from h11._readers import ChunkedReader, ContentLengthReader
from hypercorn.events import RawData
from hypercorn.protocol.events import Body
from hypercorn.protocol.h11 import STREAM_ID, H11Protocol

CHUNK_SIZE_LINE = re.compile(rb"[0-9A-Fa-f]{1,16}")
"""A chunk's size line as clients send it (no extensions, no spaces); h11 reads any other."""

LONGEST_SIZE_LINE = 18  # sixteen hex digits and CRLF

Method = Callable[..., Coroutine[Any, Any, None]]


def install() -> None:
    """Pass request bodies received over hypercorn's HTTP/1.1 connections straight to the app."""
    if getattr(H11Protocol, "_registry_direct_body", False) or not _h11_readers_known():
        return
    H11Protocol._registry_direct_body = True  # type: ignore[attr-defined]
    H11Protocol.handle = _passing_bodies(H11Protocol.handle)  # type: ignore[method-assign]


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
        connection = self.connection
        if not (
            isinstance(event, RawData)
            and type(connection) is h11.Connection
            and connection.their_state is h11.SEND_BODY
            and not connection.they_are_waiting_for_100_continue
            and not connection._receive_buffer  # h11 has bytes of its own to read first
            and self.stream is not None
        ):
            await handle(self, event)
            return
        reader = connection._reader
        if type(reader) is ContentLengthReader:
            body, rest = take_sized_body(reader, event.data)
        elif type(reader) is ChunkedReader:
            body, rest = take_chunked_body(reader, event.data)
        else:
            await handle(self, event)
            return
        if body and self.stream is not None:
            await self.stream.handle(Body(stream_id=STREAM_ID, data=body))
        if rest:
            await handle(self, RawData(data=rest))  # h11 reads on from where this stopped
        elif type(reader) is ContentLengthReader and reader._remaining == 0:
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
