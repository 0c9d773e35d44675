"""The filesystem driver: a folder on local disk.

Whole-file writes go to a temporary file in the same directory, are fsynced, renamed into
place and the directory fsynced, so a crash leaves the old file or the new one, never a mix.
A directory is deleted by renaming it into the root's trash, then removing it there, so a
write racing the delete never meets a half-emptied directory.
Blocking calls run in worker threads so the event loop never waits on the disk, except
``stat`` and small-file reads, which cost less than the hop to a thread.

A writer holds an exclusive, non-blocking ``flock`` on a sibling ``.<name>.lock`` file from
the moment it opens until ``commit`` or ``cancel``: a second writer on the same path, in this
process or any other sharing the folder, gets ``PathBusy`` at once instead of interleaving
bytes. The lock file is left in place (deleting it would race with a new locker) and goes
away with its directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import shutil
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from registry.storage.driver import (
    FileInfo,
    PathBusy,
    PathNotFound,
    SendableFile,
    StorageError,
    check_path,
    together,
)

T = TypeVar("T")
READ_CHUNK = 1024 * 1024
DIRECT_READ = 1024 * 1024  # bytes per O_DIRECT read (first reads of files not in memory)
DIRECT_DEPTH = 3  # O_DIRECT reads in flight
PAGE_SAMPLES = 16  # pages looked at to judge whether a file sits in the page cache
READ_BEFORE_KEPT = 4096  # files this process remembers reading (for ``noatime`` mounts)
DIRECT_ALIGN = 4096  # O_DIRECT offsets and lengths are multiples of this
DIRECT_BUFFER = 8 * 1024 * 1024
SMALL_DIRECTORY = 16 * 1024  # a directory's st_size up to which it is listed in the event loop
TRASH = ".deleting.tmp"  # under the root: directories being removed (hidden, as a temporary)
TRASH_STALE = 3600.0  # seconds untouched after which an entry there was left by a crash


def lock_name(name: str) -> str:
    """The lock file that guards writers of the file called ``name`` (same directory)."""
    return f".{name}.lock"


def _is_internal(name: str) -> bool:
    """Temporary and lock files, which ``list`` never shows."""
    return name.endswith(".tmp") or (name.startswith(".") and name.endswith(".lock"))


def _acquire_lock(full: Path) -> int:
    """An open descriptor holding an exclusive flock for writers of ``full``; PathBusy if taken."""
    fd = os.open(full.with_name(lock_name(full.name)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PathBusy(str(full)) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_landed(directory: Path) -> None:
    """fsync the folder a rename landed in (or left). If a concurrent delete (garbage
    collection) has removed it already, the delete came after the write: nothing is left to
    make durable, and the write still succeeded."""
    with contextlib.suppress(FileNotFoundError):
        _fsync_dir(directory)


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


def _into_directory(path: Path, write: Callable[[], None], attempts: int = 3) -> None:
    """Create ``path``'s parents, then ``write``; again if a concurrent delete (garbage
    collection removing an emptied directory) took the parent away in between."""
    for attempt in range(attempts):
        try:
            _make_parents(path)
            write()
            return
        except FileNotFoundError:
            if attempt == attempts - 1 or path.parent.exists():
                raise


@contextlib.contextmanager
def _translated(path: str) -> Iterator[None]:
    """Turn the OS's errors into the driver's: PathNotFound, else StorageError."""
    try:
        yield
    except (FileNotFoundError, NotADirectoryError):
        raise PathNotFound(path) from None
    except OSError as error:
        raise StorageError(f"{path}: {error.strerror or error}") from error


def _write_fully(fd: int, data: bytes | memoryview | mmap.mmap) -> None:
    """``os.write`` until every byte is written (it may write fewer)."""
    with memoryview(data) as view:
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_LIBC.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


@contextlib.contextmanager
def mapped(fd: int, start: int, length: int) -> Iterator[int]:
    """The address of a read-only mapping of ``length`` bytes of ``fd`` from ``start`` (a
    multiple of the page size), unmapped after. Mapping reads nothing."""
    address = _LIBC.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
    if address in (None, _MAP_FAILED):
        raise OSError(ctypes.get_errno(), "mmap")
    try:
        yield address
    finally:
        _LIBC.munmap(address, length)


def residency(address: int, length: int) -> bytes:
    """mincore(2) of the mapped pages holding ``length`` bytes from ``address``: a byte a
    page, its lowest bit set when the page is in the page cache."""
    flags = ctypes.create_string_buffer((length + mmap.PAGESIZE - 1) // mmap.PAGESIZE)
    if _LIBC.mincore(address, length, flags) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return flags.raw


def _in_page_cache(fd: int, offset: int, length: int) -> bool:
    """Whether ``length`` bytes from ``offset`` sit in memory, judged by ``PAGE_SAMPLES`` pages
    spread over them, by mincore(2): a look that reads nothing. (A read that may not wait,
    RWF_NOWAIT, starts the readahead of a page it misses, which a fast disk can finish before
    the read gives up: 84 of 300 files just dropped from the cache looked cached that way.)"""
    if length <= 0:
        return True
    start = offset - offset % mmap.PAGESIZE
    try:
        with mapped(fd, start, offset + length - start) as address:
            for position in range(offset, offset + length, max(length // PAGE_SAMPLES, 1)):
                page = address + (position - start) // mmap.PAGESIZE * mmap.PAGESIZE
                if not residency(page, 1)[0] & 1:
                    return False
    except OSError:  # cannot tell: through the cache, as for a file in memory
        return True
    return True


def _open_unnoticed(full: Path) -> int:
    """A descriptor for looking at ``full`` without counting as a read of it: O_NOATIME where
    allowed (our own files), as the page-cache probes would otherwise set its access time."""
    try:
        return os.open(full, os.O_RDONLY | os.O_CLOEXEC | os.O_NOATIME)
    except PermissionError:
        return os.open(full, os.O_RDONLY | os.O_CLOEXEC)


def _direct_prefix(view: memoryview) -> int:
    """How many leading bytes of ``view`` O_DIRECT can write as they are (aligned address)."""
    if view.readonly or len(view) < DIRECT_ALIGN:
        return 0
    address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    return 0 if address % DIRECT_ALIGN else len(view) - len(view) % DIRECT_ALIGN


class FilesystemWriter:
    """Appends to a file opened at an offset; ``commit`` fsyncs it.

    With ``direct`` the bytes go to disk with O_DIRECT from a page-aligned staging buffer,
    bypassing the page cache: filling fresh cache pages costs far more CPU on these VMs than
    the disk write itself. O_DIRECT needs block-aligned offsets and lengths, so a writer that
    starts mid-block first re-reads that block's head, and the unaligned tail is written
    through the page cache at commit.

    Bytes after ``start`` (left by an interrupted writer) are dropped at the first write or at
    commit, not at open: a writer that is cancelled without writing changes nothing, so a
    caller may open one just to hold the lock while it re-checks its own state.
    """

    def __init__(
        self,
        fd: int,
        start: int,
        direct: bool = False,
        head: bytes = b"",
        lock_fd: int = -1,
        stale_tail: bool = False,
    ) -> None:
        self._fd = fd
        self._lock_fd = lock_fd
        self._start = start
        self._size = start
        self._stale_tail = stale_tail
        self._wrote = False
        self._staging: mmap.mmap | None = None
        self._staged = 0
        self._finishing = threading.Lock()  # commit and cancel may overlap in two threads
        if direct:
            self._staging = mmap.mmap(-1, DIRECT_BUFFER)
            self._staging[: len(head)] = head
            self._staged = len(head)

    @property
    def size(self) -> int:
        return self._size

    def _drop_stale_tail(self) -> None:
        if self._stale_tail:
            os.ftruncate(self._fd, self._start)
            self._stale_tail = False

    def _write_all(self, data: bytes | bytearray | memoryview) -> None:
        self._drop_stale_tail()
        self._wrote = True
        view = memoryview(data).cast("B")
        if self._staging is None:
            _write_fully(self._fd, view)
            return
        if self._staged == 0 and (direct := _direct_prefix(view)):
            _write_fully(self._fd, view[:direct])  # aligned: O_DIRECT takes it as it is
            view = view[direct:]
        while view:
            room = DIRECT_BUFFER - self._staged
            taken = min(room, len(view))
            self._staging[self._staged : self._staged + taken] = view[:taken]
            self._staged += taken
            view = view[taken:]
            if self._staged == DIRECT_BUFFER:
                self._flush_staging(DIRECT_BUFFER)

    def _flush_staging(self, length: int) -> None:
        """Write the first ``length`` (block-aligned) staged bytes with O_DIRECT."""
        assert self._staging is not None
        with memoryview(self._staging) as staged:
            _write_fully(self._fd, staged[:length])
            remainder = self._staged - length
            staged[:remainder] = staged[length : self._staged]
        self._staged = remainder

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await asyncio.to_thread(self._write_in_thread, data)

    @property
    def thread_write(self) -> Callable[[memoryview], None]:
        return self._write_in_thread

    def _write_in_thread(self, data: bytes | bytearray | memoryview) -> None:
        self._write_all(data)
        self._size += len(data)

    def _finish(self, keep: bool, release: bool = True) -> None:
        """Commit or cancel, once: a cancel that comes while a commit's fsync runs (its
        request was cancelled) waits for it and then finds the file closed, instead of
        closing the descriptor under it, or a reused one after it. The lock is kept if not
        ``release``."""
        with self._finishing:
            if self._fd >= 0:
                self._finish_open(keep, release)
            elif keep:
                raise StorageError("commit of a closed writer")

    def _finish_open(self, keep: bool, release: bool) -> None:
        try:
            if keep:
                self._drop_stale_tail()
                if self._staging is not None and self._staged:
                    self._flush_staging(self._staged - self._staged % DIRECT_ALIGN)
                    if self._staged:  # the unaligned tail goes through the page cache
                        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
                        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
                        _write_fully(self._fd, self._staging[: self._staged])
                os.fsync(self._fd)
            elif self._wrote:
                os.ftruncate(self._fd, self._start)
        finally:
            os.close(self._fd)
            self._fd = -1
            if self._staging is not None:
                self._staging.close()
            if release:
                self._release_lock()

    def _release_lock(self) -> None:
        lock_fd, self._lock_fd = self._lock_fd, -1
        if lock_fd >= 0:
            os.close(lock_fd)  # releases the flock

    async def commit(self, alongside: Awaitable[None] | None = None) -> None:
        async def durable_then_release() -> None:
            try:
                await together(asyncio.to_thread(self._finish, True, False), alongside)
            finally:
                self._release_lock()

        # if this is cancelled, the fsync and ``alongside`` go on: the lock goes once both are done
        await asyncio.shield(durable_then_release())

    async def cancel(self) -> None:
        if self._fd >= 0:
            await asyncio.to_thread(self._finish, False)


class FilesystemDriver:
    """Stores every path as a file under ``root``."""

    def __init__(self, root: str | os.PathLike[str], direct_io: bool = True) -> None:
        self.root = Path(root).resolve()
        self.direct_io = direct_io and hasattr(os, "O_DIRECT")
        self._read_before: OrderedDict[Path, None] = OrderedDict()

    def _full(self, path: str) -> Path:
        return self.root / check_path(path)

    def _now(self, path: str, function: Callable[[], T]) -> T:
        with _translated(path):
            return function()

    async def _run(self, path: str, function: Callable[[], T]) -> T:
        with _translated(path):
            return await asyncio.to_thread(function)

    async def get_content(self, path: str) -> bytes:
        """Read in the event loop: small files (links, manifests) from the page cache take
        microseconds, less than the hop to a worker thread."""
        full = self._full(path)
        return self._now(path, full.read_bytes)

    def _put(self, full: Path, content: bytes) -> None:
        def write() -> None:
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

        _into_directory(full, write)
        _fsync_landed(full.parent)

    async def put_content(self, path: str, content: bytes) -> None:
        full = self._full(path)
        await self._run(path, lambda: self._put(full, content))

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a file; the next chunk is read (in a thread) while this one is sent.

        A file that is not in memory and was not read lately is read around the page cache
        (O_DIRECT): filling fresh cache pages costs these VMs up to 1.5 s of CPU per GiB, more
        than the disk read, and a blob pulled once (the push-then-pull of a CI job) may never
        be read again. Read a second time, it goes through the cache and stays there.
        """
        full = self._full(path)
        file = await self._run(path, lambda: open(full, "rb", buffering=0))  # noqa: SIM115
        fd = file.fileno()
        status = os.fstat(fd)
        end = status.st_size if length is None else offset + length
        direct = self.direct_io and self._first_read_from_disk(full, fd, status, offset, end)
        # O_DIRECT reads wait for the disk one at a time: several in flight keep it busy
        buffers = [mmap.mmap(-1, DIRECT_READ) for _ in range(DIRECT_DEPTH)] if direct else []

        def chunk_end(position: int) -> int:
            if direct:  # whole blocks: from the block ``position`` is in
                return min(position - position % DIRECT_ALIGN + DIRECT_READ, end)
            return min(position + READ_CHUNK, end)

        def read_chunk(position: int, stop: int, slot: int) -> bytes:
            if not direct:
                return os.pread(fd, stop - position, position)
            skip = position % DIRECT_ALIGN
            count = os.preadv(fd, [buffers[slot]], position - skip)
            with memoryview(buffers[slot]) as view:
                return bytes(view[skip : max(skip, min(count, skip + stop - position))])

        pending: deque[tuple[asyncio.Future[bytes], int, int]] = deque()
        position = offset

        def read_ahead(slot: int) -> None:
            nonlocal position
            if position < end:
                stop = chunk_end(position)
                chunk = asyncio.to_thread(read_chunk, position, stop, slot)
                pending.append((asyncio.ensure_future(chunk), stop - position, slot))
                position = stop

        try:
            # the kernel's own readahead (doubled for sequential files) keeps the disk ahead;
            # explicit WILLNEED requests measured slower on cold reads (docs/performance.md)
            os.posix_fadvise(fd, offset, 0, os.POSIX_FADV_SEQUENTIAL)
            for slot in range(max(len(buffers), 1)):
                read_ahead(slot)
            while pending:
                next_chunk, expected, slot = pending.popleft()
                chunk = await next_chunk
                if len(chunk) < expected:  # the file ended early
                    if chunk:
                        yield chunk
                    break
                read_ahead(slot)
                yield chunk
        finally:
            if pending:  # the threads must finish before the close
                await asyncio.wait([step for step, _, _ in pending])
            file.close()
            for buffer in buffers:
                buffer.close()

    def _first_read_from_disk(
        self, full: Path, fd: int, status: os.stat_result, offset: int, end: int
    ) -> bool:
        """Whether to read ``fd`` around the page cache (and switch it to O_DIRECT): bytes
        ``offset`` to ``end`` are not in memory and the file was not read before. Notes this
        read."""
        read_before = self._was_read(full, status)
        self._note_read(full)
        if read_before or _in_page_cache(fd, offset, end - offset):
            return False
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
        except OSError:  # a filesystem without O_DIRECT
            return False
        return True

    def _was_read(self, full: Path, status: os.stat_result) -> bool:
        """Whether ``full`` was read before, by any process (an access time past its last
        write: the first read sets it under ``relatime``) or lately by this one (the record
        under ``noatime``)."""
        return status.st_atime_ns > status.st_mtime_ns or full in self._read_before

    def _note_read(self, full: Path) -> None:
        self._read_before[full] = None
        self._read_before.move_to_end(full)
        if len(self._read_before) > READ_BEFORE_KEPT:
            self._read_before.popitem(last=False)

    def sendable_file(self, path: str, drop_behind: bool = False) -> SendableFile | None:
        """The file when it is in memory or was read before: sending it through the page cache
        then costs nothing more, or earns it its place. A first read of a file not in memory is
        sent too when the server drops the pages behind what it sent (``drop_behind``): the
        cache then holds a few MiB of it at a time, pages reused at once, so it costs less than
        the disk read. Otherwise ``read`` streams it around the cache."""
        full = self._full(path)
        if not self.direct_io:
            return SendableFile(str(full))
        try:
            fd = _open_unnoticed(full)
        except OSError:
            return None  # ``read`` reports it
        try:
            status = os.fstat(fd)
            if self._was_read(full, status) or _in_page_cache(fd, 0, status.st_size):
                return SendableFile(str(full))
        finally:
            os.close(fd)
        if not drop_behind:
            return None
        self._note_read(full)
        return SendableFile(str(full), keep_cached=False)

    def _open_writer(self, full: Path, offset: int) -> FilesystemWriter:
        if offset == 0:
            _make_parents(full)
            fd = os.open(full, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        else:  # continuing a file that must exist: never recreate a deleted one
            fd = os.open(full, os.O_RDWR | os.O_CLOEXEC)
        lock_fd = -1
        try:
            lock_fd = _acquire_lock(full)
            size = os.fstat(fd).st_size
            if size < offset:
                raise StorageError(f"{full.name}: has {size} bytes, cannot continue at {offset}")
            block_start = offset - offset % DIRECT_ALIGN
            head = os.pread(fd, offset - block_start, block_start)  # before O_DIRECT is on
            stale_tail = size > offset
            if self.direct_io and self._enable_direct(fd):
                os.lseek(fd, block_start, os.SEEK_SET)
                return FilesystemWriter(fd, offset, True, head, lock_fd, stale_tail)
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            if lock_fd >= 0:
                os.close(lock_fd)
            raise
        return FilesystemWriter(fd, offset, lock_fd=lock_fd, stale_tail=stale_tail)

    def _enable_direct(self, fd: int) -> bool:
        """Switch ``fd`` to O_DIRECT; False (and remembered) where the filesystem refuses it."""
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
        except OSError:
            self.direct_io = False
            return False
        return True

    async def writer(self, path: str, offset: int = 0) -> FilesystemWriter:
        full = self._full(path)
        opening = asyncio.ensure_future(self._run(path, lambda: self._open_writer(full, offset)))
        try:
            return await asyncio.shield(opening)
        except PathBusy:
            raise PathBusy(path) from None
        except asyncio.CancelledError:
            # The thread finishes anyway: close what it opened, or the lock stays held.
            with contextlib.suppress(BaseException):
                await (await opening).cancel()
            raise

    async def stat(self, path: str) -> FileInfo:
        full = self._full(path)
        result = self._now(path, full.stat)  # metadata only: cheaper than a thread hop
        is_dir = (result.st_mode & 0o170000) == 0o040000
        return FileInfo(path, 0 if is_dir else result.st_size, result.st_mtime, is_dir)

    async def list(self, path: str) -> list[str]:
        """A small directory (an upload's hash states, a repository's layers: the usual) is
        listed in the event loop, cheaper than a thread hop; a large one (thousands of tags)
        in a thread. A directory's size grows with its entries (ext4: 4 KiB blocks; xfs and
        tmpfs: bytes of names)."""
        full = self._full(path)
        if self._now(path, full.stat).st_size <= SMALL_DIRECTORY:
            names = self._now(path, lambda: os.listdir(full))
        else:
            names = await self._run(path, lambda: os.listdir(full))
        return [name for name in names if not _is_internal(name)]

    def _move(self, source: Path, destination: Path) -> None:
        _into_directory(destination, lambda: os.replace(source, destination))
        _fsync_landed(destination.parent)
        if source.parent != destination.parent:
            _fsync_landed(source.parent)

    async def move(self, source: str, destination: str) -> None:
        full_source, full_destination = self._full(source), self._full(destination)
        await self._run(source, lambda: self._move(full_source, full_destination))

    def _delete(self, full: Path) -> None:
        if full.is_dir() and not full.is_symlink():
            self._remove_directory(full)
        else:
            full.unlink()

    def _remove_directory(self, full: Path) -> None:
        """Rename ``full`` into the root's ``TRASH``, then remove it there: a write racing
        the delete (a push linking a blob again as garbage collection removes the link) lands
        either before, and goes with it, or after, in a directory made again; never into one
        being emptied, which ``rmdir`` would refuse. A write whose path was resolved before
        the rename can still create a file in the directory after it is in the trash (found
        by CI: ``rmdir`` refused the trashed directory); that never fails the delete, the path
        being gone already. What a crash or such a write left in the trash goes at a later
        delete, once ``TRASH_STALE``."""
        trash = self.root / TRASH
        trash.mkdir(exist_ok=True)
        doomed = trash / os.urandom(8).hex()
        try:
            os.rename(full, doomed)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            shutil.rmtree(full)  # another filesystem mounted under the root: removed in place
            return
        try:
            shutil.rmtree(doomed)
        except OSError:  # an entry landed late: once more, else the stale sweep takes it
            shutil.rmtree(doomed, ignore_errors=True)
        cutoff = time.time() - TRASH_STALE
        with os.scandir(trash) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_ctime < cutoff:
                        shutil.rmtree(entry.path, ignore_errors=True)

    async def delete(self, path: str) -> None:
        full = self._full(path)
        await self._run(path, lambda: self._delete(full))

    async def redirect_url(self, path: str) -> str | None:
        return None

    async def close(self) -> None:
        """Nothing to release: every file is closed when its operation ends."""
