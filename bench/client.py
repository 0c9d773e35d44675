"""A minimal blocking HTTP/1.1 client for bulk transfers.

Bodies go out with ``socket.sendfile`` and come back through ``recv_into`` one large buffer, so
the client costs little CPU and the server is what gets measured. Every download is hashed as it
arrives: a fast wrong answer cannot score.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from dataclasses import dataclass, field
from typing import BinaryIO


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    received: int = 0
    sha256: str = ""


class Connection:
    """One keep-alive connection to ``host:port`` with Basic credentials."""

    def __init__(self, host: str, port: int, user: str, password: str) -> None:
        self.address = (host, port)
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.sock: socket.socket | None = None
        self.buffer = bytearray(4 * 1024 * 1024)
        self.pending = b""

    def _socket(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(self.address)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        file: BinaryIO | None = None,
        offset: int = 0,
        count: int | None = None,
        headers: dict[str, str] | None = None,
        hash_body: bool = False,
    ) -> Response:
        sock = self._socket()
        length = len(body) if body is not None else (count if file is not None else 0) or 0
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.address[0]}:{self.address[1]}"]
        lines.append(f"Authorization: {self.auth}")
        lines.append(f"Content-Length: {length}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if body is not None:
            sock.sendall(head + body)
        else:
            sock.sendall(head)
            if file is not None and length:
                sock.sendfile(file, offset, length)
        return self._read_response(method, hash_body)

    def _read_until_headers(self) -> bytes:
        data = self.pending
        sock = self._socket()
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the response")
            data += chunk
        head, _, self.pending = data.partition(b"\r\n\r\n")
        return head

    def _read_response(self, method: str, hash_body: bool) -> Response:
        head = self._read_until_headers().decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        response = Response(status, headers)
        if method == "HEAD" or status in (204, 304):
            return response
        if headers.get("transfer-encoding", "").lower() == "chunked":
            response.body = self._read_chunked()
            response.received = len(response.body)
            return response
        length = int(headers.get("content-length", "0"))
        if not hash_body:
            response.body = self._read_exact(length)
            response.received = length
            return response
        hasher = hashlib.sha256()
        view = memoryview(self.buffer)
        remaining = length
        if self.pending:
            first = self.pending[:remaining]
            hasher.update(first)
            remaining -= len(first)
            self.pending = self.pending[len(first) :]
        sock = self._socket()
        while remaining:
            got = sock.recv_into(view, min(remaining, len(self.buffer)))
            if not got:
                raise ConnectionError("connection closed mid-body")
            hasher.update(view[:got])
            remaining -= got
        response.received = length
        response.sha256 = hasher.hexdigest()
        return response

    def _read_exact(self, length: int) -> bytes:
        data = bytearray(self.pending[:length])
        self.pending = self.pending[len(data) :]
        sock = self._socket()
        while len(data) < length:
            chunk = sock.recv(min(length - len(data), 1 << 20))
            if not chunk:
                raise ConnectionError("connection closed mid-body")
            data += chunk
        return bytes(data)

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            while b"\r\n" not in self.pending:
                self.pending += self._socket().recv(65536)
            size_line, _, self.pending = self.pending.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            chunk = self._read_exact(size + 2)[:size]
            if size == 0:
                return bytes(body)
            body += chunk


def random_file(path: str, size: int) -> str:
    """Write ``size`` random bytes (once; reused if present) and return their sha256 digest."""
    hasher = hashlib.sha256()
    if os.path.exists(path) and os.path.getsize(path) == size:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 24):
                hasher.update(chunk)
        return "sha256:" + hasher.hexdigest()
    with open(path, "wb") as file:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 1 << 24))
            hasher.update(chunk)
            file.write(chunk)
            remaining -= len(chunk)
    return "sha256:" + hasher.hexdigest()


def fresh_content(path: str) -> str:
    """Give the file at ``path`` new first 4 KiB and return its sha256 digest (read whole: it
    is in the page cache after).

    Every push in the bench sends content the server has not stored, as nearly every real
    upload does: pushing one blob again measures the duplicate path instead (for ours,
    removing the second copy, which on an ext4 mounted with online discard kept the disk busy
    for 160 ms a GiB while the next push ran).
    """
    with open(path, "r+b") as file:
        file.write(os.urandom(4096))
    return random_file(path, os.path.getsize(path))
