"""The contract every storage driver keeps (cf. distribution's driver test suites)."""

from __future__ import annotations

import asyncio
import os

import pytest

from registry.storage.driver import PathBusy, PathNotFound, StorageDriver, StorageError

pytestmark = pytest.mark.anyio


async def read_all(
    driver: StorageDriver, path: str, offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in driver.read(path, offset, length)])


async def test_put_get_replace(driver: StorageDriver) -> None:
    await driver.put_content("a/b/c", b"one")
    assert await driver.get_content("a/b/c") == b"one"
    await driver.put_content("a/b/c", b"two!")
    assert await driver.get_content("a/b/c") == b"two!"
    info = await driver.stat("a/b/c")
    assert info.size == 4 and not info.is_dir


async def test_missing_paths_raise_path_not_found(driver: StorageDriver) -> None:
    with pytest.raises(PathNotFound):
        await driver.get_content("nope/x")
    with pytest.raises(PathNotFound):
        await driver.stat("nope/x")
    with pytest.raises(PathNotFound):
        await driver.list("nope")
    with pytest.raises(PathNotFound):
        await driver.delete("nope/x")
    with pytest.raises(PathNotFound):
        await read_all(driver, "nope/x")


async def test_read_ranges_and_large_content(driver: StorageDriver) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    await driver.put_content("big", data)
    assert await read_all(driver, "big") == data
    assert await read_all(driver, "big", 1000, 5) == data[1000:1005]
    assert await read_all(driver, "big", len(data) - 3) == data[-3:]


async def test_writer_appends_commits_and_resumes(driver: StorageDriver) -> None:
    writer = await driver.writer("up/data", 0)
    await writer.write(b"hello ")
    await writer.write(bytearray(b"world"))
    assert writer.size == 11
    await writer.commit()
    again = await driver.writer("up/data", 11)
    await again.write(memoryview(b"!!"))
    await again.commit()
    assert await driver.get_content("up/data") == b"hello world!!"


async def test_writer_cancel_drops_only_its_bytes(driver: StorageDriver) -> None:
    first = await driver.writer("up/data", 0)
    await first.write(b"keep")
    await first.commit()
    second = await driver.writer("up/data", 4)
    await second.write(b"drop")
    await second.cancel()
    assert await driver.get_content("up/data") == b"keep"


async def test_writer_at_offset_truncates_unacknowledged_tail(driver: StorageDriver) -> None:
    await driver.put_content("up/data", b"0123456789")
    writer = await driver.writer("up/data", 4)
    await writer.write(b"xy")
    await writer.commit()
    assert await driver.get_content("up/data") == b"0123xy"
    with pytest.raises(StorageError):
        await driver.writer("up/data", 100)


async def test_list_move_delete(driver: StorageDriver) -> None:
    await driver.put_content("dir/one", b"1")
    await driver.put_content("dir/sub/two", b"2")
    assert sorted(await driver.list("dir")) == ["one", "sub"]
    assert (await driver.stat("dir")).is_dir
    await driver.move("dir/one", "other/place/one")
    assert await driver.get_content("other/place/one") == b"1"
    with pytest.raises(PathNotFound):
        await driver.get_content("dir/one")
    await driver.delete("dir")
    with pytest.raises(PathNotFound):
        await driver.list("dir")


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/b\x00", "a b", "a\\b"]
)
async def test_unsafe_paths_are_refused(driver: StorageDriver, path: str) -> None:
    with pytest.raises(StorageError) as caught:
        await driver.put_content(path, b"x")
    assert not isinstance(caught.value, PathNotFound)


async def test_writers_are_exclusive(driver: StorageDriver) -> None:
    first = await driver.writer("up/data", 0)
    await first.write(b"abc")
    with pytest.raises(PathBusy):
        await driver.writer("up/data", 0)
    with pytest.raises(PathBusy):
        await driver.writer("up/data", 3)
    await first.commit()
    second = await driver.writer("up/data", 3)  # released by commit
    with pytest.raises(PathBusy):
        await driver.writer("up/data", 3)
    await second.cancel()
    third = await driver.writer("up/data", 3)  # released by cancel
    await third.write(b"def")
    await third.commit()
    assert await driver.get_content("up/data") == b"abcdef"
    other = await driver.writer("up/other", 0)  # another path is independent
    await other.cancel()


async def test_a_commit_keeps_the_lock_until_what_runs_alongside_is_done(
    driver: StorageDriver,
) -> None:
    writer = await driver.writer("up/data", 0)
    await writer.write(b"abc")
    alongside_may_end = asyncio.Event()
    busy_meanwhile = []

    async def alongside() -> None:
        await alongside_may_end.wait()

    async def open_meanwhile() -> None:
        await asyncio.sleep(0.2)  # the data is committed by now; the step alongside waits
        try:
            await driver.writer("up/data", 3)
        except PathBusy:
            busy_meanwhile.append(True)
        alongside_may_end.set()

    await asyncio.gather(writer.commit(alongside()), open_meanwhile())
    assert busy_meanwhile == [True]
    assert await driver.get_content("up/data") == b"abc"
    after = await driver.writer("up/data", 3)  # released once both were done
    await after.cancel()


async def test_a_failure_alongside_a_commit_is_raised_and_the_lock_released(
    driver: StorageDriver,
) -> None:
    writer = await driver.writer("up/data", 0)
    await writer.write(b"abc")

    async def failing() -> None:
        raise OSError("the state could not be saved")

    with pytest.raises(OSError, match="could not be saved"):
        await writer.commit(failing())
    again = await driver.writer("up/data", 0)
    await again.cancel()


async def test_writer_continuing_a_missing_file_raises_path_not_found(
    driver: StorageDriver,
) -> None:
    with pytest.raises(PathNotFound):
        await driver.writer("gone/data", 5)
    with pytest.raises(PathNotFound):
        await driver.list("gone")  # and nothing was created on the way


async def test_writer_cancelled_before_writing_changes_nothing(driver: StorageDriver) -> None:
    await driver.put_content("up/data", b"0123456789")
    writer = await driver.writer("up/data", 4)
    await writer.cancel()
    assert await driver.get_content("up/data") == b"0123456789"
    assert await driver.list("up") == ["data"]  # no lock or temporary file is listed
    committed = await driver.writer("up/data", 4)
    await committed.commit()  # a commit drops the unacknowledged tail even with no write
    assert await driver.get_content("up/data") == b"0123"
