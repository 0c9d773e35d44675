"""uvicorn's httptools protocol with a cap on a request's head (request line and headers).

llhttp, which httptools wraps, sets no limit of its own (nor does httptools, which gathers a
header's value in pieces until it ends), so a client could send a head without end and the
worker would keep all of it. Heads up to the cap reach the app, which answers 431 with an OCI
error document when they exceed ``max_header_bytes``; past the cap the connection gets 400
and is closed, as hypercorn's and granian's buffer limits do.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CappedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that counts what arrives while a head is read, up to a cap."""

    max_head_bytes = 408 * 1024
    _reading_head = True
    _head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            # a whole read counts, even where a body follows the head in it: at most one read
            # (256 KB with uvloop) more than the head, well under the cap
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                if not self.transport.is_closing():
                    self.send_400_response("Request head too large.")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head, self._head_bytes = True, 0
        super().on_message_complete()


def capped_http_protocol(max_head_bytes: int) -> type[CappedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, capped at ``max_head_bytes``."""
    return type(
        "CappedHttpToolsProtocol", (CappedHttpToolsProtocol,), {"max_head_bytes": max_head_bytes}
    )
