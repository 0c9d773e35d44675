"""The filesystem driver: a folder on local disk.

Whole-file writes go to a temporary file in the same directory, are fsynced, renamed into
place and the directory fsynced, so a crash leaves the old file or the new one, never a mix.
Blocking calls run in worker threads so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from registry.storage.driver import FileInfo, PathNotFound, StorageError, check_path

T = TypeVar("T")
READ_CHUNK = 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_parents(path: Path) -> None:
    """Create missing parent directories, fsyncing each directory that gained an entry."""
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    if not missing:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for directory in [parent, *missing]:
        _fsync_dir(directory)


class FilesystemWriter:
    """Appends to a file opened at an offset; ``commit`` fsyncs it."""

    def __init__(self, fd: int, start: int) -> None:
        self._fd = fd
        self._start = start
        self._size = start

    @property
    def size(self) -> int:
        return self._size

    def _write_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await asyncio.to_thread(self._write_all, data)
        self._size += len(data)

    def _finish(self, keep: bool) -> None:
        try:
            if keep:
                os.fsync(self._fd)
            else:
                os.ftruncate(self._fd, self._start)
        finally:
            os.close(self._fd)
            self._fd = -1

    async def commit(self) -> None:
        await asyncio.to_thread(self._finish, True)

    async def cancel(self) -> None:
        if self._fd >= 0:
            await asyncio.to_thread(self._finish, False)


class FilesystemDriver:
    """Stores every path as a file under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def _full(self, path: str) -> Path:
        return self.root / check_path(path)

    async def _run(self, path: str, function: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(function)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        except OSError as error:
            raise StorageError(f"{path}: {error.strerror or error}") from error

    async def get_content(self, path: str) -> bytes:
        full = self._full(path)
        return await self._run(path, full.read_bytes)

    def _put(self, full: Path, content: bytes) -> None:
        _make_parents(full)
        temporary = full.with_name(f".{full.name}.{os.urandom(6).hex()}.tmp")
        try:
            with open(temporary, "wb") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, full)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_dir(full.parent)

    async def put_content(self, path: str, content: bytes) -> None:
        full = self._full(path)
        await self._run(path, lambda: self._put(full, content))

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        full = self._full(path)
        file = await self._run(path, lambda: open(full, "rb"))  # noqa: SIM115 - closed below
        try:
            await asyncio.to_thread(file.seek, offset)
            remaining = length
            while remaining is None or remaining > 0:
                size = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = await asyncio.to_thread(file.read, size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            file.close()

    def _open_writer(self, full: Path, offset: int) -> FilesystemWriter:
        _make_parents(full)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size < offset:
                raise StorageError(f"{full.name}: has {size} bytes, cannot continue at {offset}")
            if size > offset:
                os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return FilesystemWriter(fd, offset)

    async def writer(self, path: str, offset: int = 0) -> FilesystemWriter:
        full = self._full(path)
        return await self._run(path, lambda: self._open_writer(full, offset))

    async def stat(self, path: str) -> FileInfo:
        full = self._full(path)
        result = await self._run(path, full.stat)
        is_dir = (result.st_mode & 0o170000) == 0o040000
        return FileInfo(path, 0 if is_dir else result.st_size, result.st_mtime, is_dir)

    async def list(self, path: str) -> list[str]:
        full = self._full(path)
        names = await self._run(path, lambda: os.listdir(full))
        return [name for name in names if not name.endswith(".tmp")]

    def _move(self, source: Path, destination: Path) -> None:
        _make_parents(destination)
        os.replace(source, destination)
        _fsync_dir(destination.parent)
        if source.parent != destination.parent:
            _fsync_dir(source.parent)

    async def move(self, source: str, destination: str) -> None:
        full_source, full_destination = self._full(source), self._full(destination)
        await self._run(source, lambda: self._move(full_source, full_destination))

    def _delete(self, full: Path) -> None:
        if full.is_dir() and not full.is_symlink():
            shutil.rmtree(full)
        else:
            full.unlink()

    async def delete(self, path: str) -> None:
        full = self._full(path)
        await self._run(path, lambda: self._delete(full))

    async def redirect_url(self, path: str) -> str | None:
        return None

    def local_path(self, path: str) -> str | None:
        return str(self._full(path))
