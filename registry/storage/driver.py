"""The storage-driver interface: bytes at slash-separated paths, nothing about OCI.

Shaped after distribution's ``storagedriver.StorageDriver``. Paths are relative
(``docker/registry/v2/...``), built by ``registry.services.paths`` from validated names only;
drivers reject anything else as a second line of defence. Every backend raises
``PathNotFound`` for a missing path and ``StorageError`` for anything else, so nothing above
a driver ever sees a backend's own exceptions.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

_SAFE_PATH = re.compile(r"[A-Za-z0-9._:=+-]+(?:/[A-Za-z0-9._:=+-]+)*")


@dataclass(frozen=True, slots=True)
class SendableFile:
    """A file on this machine that a server may send by path."""

    path: str
    keep_cached: bool = True
    """False: drop its pages from the page cache behind the send (a first read of a file that
    was not in memory; it need not stay there)."""


class StorageError(Exception):
    """A backend failure (I/O error, unreachable service, invalid path)."""


class PathNotFound(StorageError):
    """The path does not exist."""

    def __init__(self, path: str) -> None:
        super().__init__(f"path not found: {path}")
        self.path = path


class PathBusy(StorageError):
    """Another writer (in this or any other process or replica) holds the path."""

    def __init__(self, path: str) -> None:
        super().__init__(f"path busy: {path}")
        self.path = path


def check_path(path: str) -> str:
    """Reject a path that is absolute, empty, or has ``.``/``..`` segments or odd characters."""
    if not _SAFE_PATH.fullmatch(path) or any(part in (".", "..") for part in path.split("/")):
        raise StorageError(f"invalid storage path: {path!r}")
    return path


async def together(*steps: Awaitable[None] | None) -> None:
    """Run ``steps`` at once and wait for every one (none is cancelled when another fails, nor
    when the caller is); then raise the first one's error."""
    started = [asyncio.ensure_future(step) for step in steps if step is not None]
    if started:
        await asyncio.wait(started)
        for step in started:
            step.result()


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What ``stat`` tells about a path."""

    path: str
    size: int
    modified: float  # seconds since the epoch
    is_dir: bool


class FileWriter(Protocol):
    """Appends to one file; nothing is durable until ``commit``."""

    @property
    def size(self) -> int:
        """Bytes in the file so far, including what this writer appended."""
        ...

    async def write(self, data: bytes | bytearray | memoryview) -> None: ...

    @property
    def thread_write(self) -> Callable[[memoryview], None] | None:
        """``write`` as a blocking function for a worker thread, where writing is a system
        call (a file); None where it is asynchronous I/O (object storage)."""
        ...

    async def commit(self, alongside: Awaitable[None] | None = None) -> None:
        """Make everything written durable (fsync) and close.

        ``alongside`` (saving what describes these bytes, say) runs meanwhile; the writer's
        lock is released only once both are done, so the next writer sees its result.
        """
        ...

    async def cancel(self) -> None:
        """Drop what this writer appended and close."""
        ...


class StorageDriver(Protocol):
    """A minimal byte store; see the module docstring for the contract."""

    async def get_content(self, path: str) -> bytes:
        """The whole content of a (small) file."""
        ...

    async def put_content(self, path: str, content: bytes) -> None:
        """Write a whole file atomically and durably, replacing any previous content."""
        ...

    def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (or to the end) from ``offset``; PathNotFound when iterated."""
        ...

    async def writer(self, path: str, offset: int = 0) -> FileWriter:
        """A writer that continues the file at ``offset``, dropping any bytes after it.

        Writers are exclusive across processes and replicas: while one is open on ``path``
        (until its ``commit`` or ``cancel``), opening another raises ``PathBusy`` at once.
        ``offset > 0`` on a missing file raises ``PathNotFound`` (a deleted file is never
        recreated). Bytes after ``offset`` are dropped at the first write or at ``commit``;
        a writer cancelled before any write leaves the file exactly as it was, so a caller
        may open one only to hold the lock while it re-checks its own state.
        """
        ...

    async def stat(self, path: str) -> FileInfo: ...

    async def list(self, path: str) -> list[str]:
        """The names of a directory's direct children (unsorted)."""
        ...

    async def move(self, source: str, destination: str) -> None:
        """Atomically move a file, replacing the destination."""
        ...

    async def delete(self, path: str) -> None:
        """Delete a file or a whole directory tree."""
        ...

    async def redirect_url(self, path: str) -> str | None:
        """A URL a client can fetch the file from directly, or None to stream it."""
        ...

    def sendable_file(self, path: str, drop_behind: bool = False) -> SendableFile | None:
        """The file, for servers that send files by path, when that is the better way to send
        it; None to stream it with ``read``. ``drop_behind``: the server can drop the pages it
        has sent from the page cache (``SendableFile.keep_cached``)."""
        ...

    async def close(self) -> None:
        """Release connections and other resources; called once at shutdown."""
        ...
