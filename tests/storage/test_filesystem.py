"""What only the filesystem driver promises: where files land, and no temp files left."""

from __future__ import annotations

import asyncio
import errno
import itertools
import mmap
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from registry.storage.driver import PathBusy, SendableFile, StorageError
from registry.storage.filesystem import (
    DIRECT_ALIGN,
    DIRECT_BUFFER,
    DIRECT_READ,
    SMALL_DIRECTORY,
    TRASH,
    FilesystemDriver,
)
from tests.helpers import evict, in_memory, kept_in_memory, resident_bytes

pytestmark = pytest.mark.anyio


async def test_files_live_under_root_and_no_temporaries_remain(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put_content("x/y/z", b"data")
    assert (tmp_path / "x/y/z").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "x/y").iterdir()] == ["z"]
    assert driver.sendable_file("x/y/z") == SendableFile(str(tmp_path / "x/y/z"))  # in memory


async def test_a_small_directory_is_listed_at_once_and_a_large_one_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FilesystemDriver(tmp_path)
    in_threads: list[str] = []
    run = driver._run

    async def recording_run(path: str, function: Callable[[], object]) -> object:
        in_threads.append(path)
        return await run(path, function)

    monkeypatch.setattr(driver, "_run", recording_run)
    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    for number in range(3):
        (tmp_path / "small" / f"state-{number}").touch()
    names = {f"tag-{number:05}" for number in range(2000)}
    for name in names:
        (tmp_path / "large" / name).touch()
    (tmp_path / "large" / ".tag-00000.lock").touch()  # the driver's own: never listed
    assert os.stat(tmp_path / "large").st_size > SMALL_DIRECTORY
    assert sorted(await driver.list("small")) == ["state-0", "state-1", "state-2"]
    assert in_threads == []
    assert set(await driver.list("large")) == names
    assert in_threads == ["large"]


@pytest.mark.parametrize("direct_io", [True, False])
async def test_writes_at_unaligned_offsets_across_buffers(tmp_path: Path, direct_io: bool) -> None:
    """O_DIRECT staging: pieces of odd sizes, resumed at unaligned offsets, read back exactly."""
    driver = FilesystemDriver(tmp_path, direct_io=direct_io)
    data = os.urandom(3 * DIRECT_BUFFER + 12345)
    cuts = [
        0,
        1,
        4097,
        5000,
        DIRECT_BUFFER + 3,
        2 * DIRECT_BUFFER,
        3 * DIRECT_BUFFER + 1,
        len(data),
    ]
    for start, end in itertools.pairwise(cuts):
        writer = await driver.writer("upload/data", start)
        middle = (start + end) // 2
        await writer.write(data[start:middle])
        await writer.write(bytearray(data[middle:end]))
        assert writer.size == end
        await writer.commit()
        assert (tmp_path / "upload/data").read_bytes() == data[:end]
    cancelled = await driver.writer("upload/data", 4097)
    await cancelled.write(b"x" * 10_000)
    await cancelled.cancel()
    assert (tmp_path / "upload/data").read_bytes() == data[:4097]


async def test_aligned_buffers_of_odd_lengths_are_written_whole(tmp_path: Path) -> None:
    """Page-aligned buffers (as uploads hand over) whose lengths are not whole blocks."""
    driver = FilesystemDriver(tmp_path, direct_io=True)
    data = os.urandom(5 * DIRECT_ALIGN + 700)
    pieces = [(0, 3 * DIRECT_ALIGN + 100), (3 * DIRECT_ALIGN + 100, len(data))]
    writer = await driver.writer("upload/data", 0)
    for start, end in pieces:
        with mmap.mmap(-1, end - start) as buffer:
            buffer[:] = data[start:end]
            with memoryview(buffer) as view:
                await writer.write(view)
    await writer.commit()
    assert (tmp_path / "upload/data").read_bytes() == data
    writer = await driver.writer("upload/data", len(data))  # resumed mid-block
    with mmap.mmap(-1, 2 * DIRECT_ALIGN + 1) as buffer:
        buffer[:] = b"y" * len(buffer)
        with memoryview(buffer) as view:
            await writer.write(view)
    await writer.commit()
    assert (tmp_path / "upload/data").read_bytes() == data + b"y" * (2 * DIRECT_ALIGN + 1)


def test_writer_lock_holds_across_processes(tmp_path: Path) -> None:
    """A writer open in another process makes this one's writer raise PathBusy."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, sys\n"
            "from registry.storage.filesystem import FilesystemDriver\n"
            "async def main():\n"
            f"    w = await FilesystemDriver({str(tmp_path)!r}).writer('up/data', 0)\n"
            "    print('locked', flush=True)\n"
            "    sys.stdin.readline()\n"
            "    await w.commit()\n"
            "asyncio.run(main())\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "locked"
        driver = FilesystemDriver(tmp_path)
        with pytest.raises(PathBusy):
            asyncio.run(driver.writer("up/data", 0))
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
        writer = asyncio.run(driver.writer("up/data", 0))
        asyncio.run(writer.cancel())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


async def test_a_directory_deleted_under_a_write_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Garbage collection may remove an emptied link directory just as a push writes into it."""
    from registry.storage import filesystem

    driver = FilesystemDriver(tmp_path)
    await driver.put_content("repo/_layers/old", b"x")
    make_parents = filesystem._make_parents
    removed: list[Path] = []

    def make_then_lose(path: Path) -> None:
        make_parents(path)
        if len(removed) < 2:  # the first two attempts lose the directory (concurrent delete)
            shutil.rmtree(path.parent)
            removed.append(path.parent)

    monkeypatch.setattr(filesystem, "_make_parents", make_then_lose)
    await driver.put_content("repo/_layers/sha256/abc/link", b"sha256:abc")
    assert (tmp_path / "repo/_layers/sha256/abc/link").read_bytes() == b"sha256:abc"
    await driver.put_content("repo/_uploads/u/data", b"bytes")
    removed.clear()
    await driver.move("repo/_uploads/u/data", "blobs/ab/abc/data")
    assert (tmp_path / "blobs/ab/abc/data").read_bytes() == b"bytes"
    assert len(removed) == 2


async def test_a_directory_deleted_right_after_a_write_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete came after the write (garbage collection removing a link it judged unused):
    the write succeeded, and there is no folder left to fsync."""
    driver = FilesystemDriver(tmp_path)
    replace = os.replace

    def replace_then_lose_the_folder(source: str | Path, destination: str | Path) -> None:
        replace(source, destination)
        shutil.rmtree(Path(destination).parent)

    monkeypatch.setattr(os, "replace", replace_then_lose_the_folder)
    await driver.put_content("repo/_layers/sha256/abc/link", b"sha256:abc")
    assert not (tmp_path / "repo/_layers/sha256/abc").exists()
    monkeypatch.setattr(os, "replace", replace)
    await driver.put_content("repo/_uploads/u/data", b"bytes")
    monkeypatch.setattr(os, "replace", replace_then_lose_the_folder)
    await driver.move("repo/_uploads/u/data", "blobs/ab/abc/data")
    assert not (tmp_path / "blobs/ab/abc").exists()


async def test_a_directory_deleted_as_a_write_lands_in_it_goes_whole_or_holds_the_write(
    tmp_path: Path,
) -> None:
    """Garbage collection removes a link directory just as a push links the blob again: the
    delete never fails on a directory refilled under it (``rmdir``: not empty), the write
    never fails, and the old link never survives. Bounded: 300 races in threads."""
    driver = FilesystemDriver(tmp_path)
    link, folder = "repo/_layers/sha256/abc/link", tmp_path / "repo/_layers/sha256"
    for _ in range(300):
        await driver.put_content(link, b"old")
        await asyncio.gather(  # either failing fails the test
            driver.delete("repo/_layers/sha256/abc"), driver.put_content(link, b"new")
        )
        left = sorted(path.name for path in folder.iterdir())
        assert left in ([], ["abc"])  # nothing half-deleted or hidden is left beside it
        if left:
            assert (folder / "abc/link").read_bytes() == b"new"
    assert list((tmp_path / TRASH).iterdir()) == []


async def test_a_file_landing_late_in_a_trashed_directory_never_fails_its_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that resolved the directory's path before the rename creates its file in the
    directory once it is in the trash, after ``rmtree`` listed it: ``rmdir`` refuses. The
    path is gone already, so the delete succeeds, and the second try removes the late file."""
    driver = FilesystemDriver(tmp_path)
    await driver.put_content("repo/_layers/sha256/abc/link", b"old")
    real_rmtree = shutil.rmtree
    tries: list[str] = []

    def a_file_lands_late(path: str, *args: object, **kwargs: object) -> None:
        tries.append(str(path))
        if len(tries) == 1:
            (Path(path) / ".link.late.tmp").write_bytes(b"new")
            raise OSError(errno.ENOTEMPTY, "Directory not empty", str(path))
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "rmtree", a_file_lands_late)
    await driver.delete("repo/_layers/sha256/abc")
    assert not (tmp_path / "repo/_layers/sha256/abc").exists()
    assert tries[:2] == [tries[0], tries[0]]  # the trashed directory, twice
    assert list((tmp_path / TRASH).iterdir()) == []


async def test_what_a_crash_left_in_the_trash_goes_once_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory renamed into the trash by a process that died before removing it is
    removed by a later delete once untouched for ``TRASH_STALE``; one in the middle of
    another process's delete is left alone."""
    from registry.storage import filesystem

    driver = FilesystemDriver(tmp_path)
    left = tmp_path / TRASH / "left-by-a-crash"
    left.mkdir(parents=True)
    (left / "data").write_bytes(b"a big blob")
    for name in ("a", "b"):
        await driver.put_content(f"blobs/{name}/data", b"x")
    await driver.delete("blobs/a")
    assert left.exists() and not (tmp_path / "blobs/a").exists()  # fresh: maybe in flight
    monkeypatch.setattr(filesystem, "TRASH_STALE", -1.0)
    await driver.delete("blobs/b")
    assert list((tmp_path / TRASH).iterdir()) == []


async def test_a_directory_on_another_filesystem_is_removed_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put_content("mounted/blob/data", b"x")
    rename = os.rename

    def across_filesystems(source: str | Path, destination: str | Path) -> None:
        if Path(destination).parent.name == TRASH:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        rename(source, destination)

    monkeypatch.setattr(os, "rename", across_filesystems)
    await driver.delete("mounted/blob")
    assert not (tmp_path / "mounted/blob").exists()
    assert (tmp_path / "mounted").exists()


async def test_cancel_during_a_commit_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request cancelled while its commit fsyncs must not close the descriptor under it."""
    driver = FilesystemDriver(tmp_path)
    writer = await driver.writer("upload/data")
    await writer.write(b"kept" * 5000)
    in_fsync, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        in_fsync.set()
        release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    commit = asyncio.ensure_future(writer.commit())
    assert await asyncio.to_thread(in_fsync.wait, 10)
    cancel = asyncio.ensure_future(writer.cancel())
    await asyncio.sleep(0.1)
    assert not cancel.done()  # waits for the commit instead of closing its descriptor
    release.set()
    await commit  # no EBADF
    await cancel
    assert (tmp_path / "upload/data").read_bytes() == b"kept" * 5000
    with pytest.raises(StorageError):
        await writer.commit()


async def read_all(
    driver: FilesystemDriver, path: str, offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in driver.read(path, offset, length)])


async def test_a_file_not_in_memory_is_read_around_the_cache_once_then_through_it(
    tmp_path: Path,
) -> None:
    driver = FilesystemDriver(tmp_path)
    data = os.urandom(2 * DIRECT_READ + 5000)
    await driver.put_content("blob", data)
    evict(tmp_path / "blob")
    assert driver.sendable_file("blob") is None  # a server would read it through the cache

    assert await read_all(driver, "blob") == data
    assert not in_memory(tmp_path / "blob")  # read from disk, the cache left as it was
    kept = SendableFile(str(tmp_path / "blob"))
    assert driver.sendable_file("blob") == kept  # read before: cache it now
    # another process (worker) knows it too: the read set the file's access time
    assert FilesystemDriver(tmp_path).sendable_file("blob") == kept
    assert await read_all(driver, "blob") == data
    assert kept_in_memory(tmp_path / "blob")
    assert await read_all(driver, "blob") == data


async def test_a_first_read_is_sendable_by_a_server_that_drops_the_pages_behind(
    tmp_path: Path,
) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put_content("blob", os.urandom(3 * DIRECT_READ))
    evict(tmp_path / "blob")
    first = driver.sendable_file("blob", drop_behind=True)
    assert first == SendableFile(str(tmp_path / "blob"), keep_cached=False)
    # that counts as its first read: the next one keeps it cached
    assert driver.sendable_file("blob", drop_behind=True) == SendableFile(str(tmp_path / "blob"))
    assert not in_memory(tmp_path / "blob")  # deciding read nothing
    assert FilesystemDriver(tmp_path, direct_io=False).sendable_file("blob", True) == (
        SendableFile(str(tmp_path / "blob"))  # without O_DIRECT: always through the cache
    )


async def test_judging_whether_a_file_is_in_memory_reads_none_of_it(tmp_path: Path) -> None:
    """The look is mincore(2): a read that may not wait (RWF_NOWAIT) starts the readahead of
    what it misses, and a fast disk can bring the page in before that read gives up, so a
    file just dropped from the cache looked cached in a quarter of tries."""
    driver = FilesystemDriver(tmp_path)
    for index in range(20):
        name = f"blob-{index}"
        await driver.put_content(name, os.urandom(2 * DIRECT_READ))
        evict(tmp_path / name)
        before = resident_bytes(tmp_path / name)
        assert driver.sendable_file(name) is None
        assert resident_bytes(tmp_path / name) <= before  # nothing read in, not even ahead


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, None),
        (1, 10),
        (4095, 2),
        (DIRECT_ALIGN, DIRECT_READ),
        (DIRECT_READ - 7, 5000),
        (3 * DIRECT_READ - 1, None),
        (5, 2 * DIRECT_READ),
    ],
)
async def test_ranges_read_around_the_cache_are_exact(
    tmp_path: Path, offset: int, length: int | None
) -> None:
    driver = FilesystemDriver(tmp_path)
    data = os.urandom(3 * DIRECT_READ + 3)
    await driver.put_content("blob", data)
    evict(tmp_path / "blob")
    end = None if length is None else offset + length
    assert await read_all(driver, "blob", offset, length) == data[offset:end]
    assert not in_memory(tmp_path / "blob")  # read around the cache
