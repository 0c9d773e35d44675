"""The upload pump: bodies hashed and written in order through a ring of reused buffers.

Writers come in both kinds: blocking (a file: written from a stage thread) and asynchronous
(object storage: written in tasks)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from registry.oci.digest import ResumableHasher
from registry.services import pump as pumps
from registry.services.pump import (
    PART,
    PUMP_BUFFERS,
    SMALL_BODY,
    WRITE_BUFFER,
    BufferPool,
    pump,
)
from registry.storage.filesystem import FilesystemDriver

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def own_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool of this test's own: what earlier tests left in the process's pool stays out."""
    pool = BufferPool(WRITE_BUFFER, deep=PUMP_BUFFERS, shallow=2, keep_seconds=10)
    monkeypatch.setattr(pumps, "BUFFERS", pool)


async def pieces(data: bytes, seed: int = 1) -> AsyncIterator[bytes]:
    """``data`` in pieces of uneven sizes, as a server hands a body over."""
    chance = random.Random(seed)
    position = 0
    while position < len(data):
        size = chance.choice((1, 4096, 65536, 300_001, WRITE_BUFFER + 7))
        yield data[position : position + size]
        position += size


class RecordingWriter:
    """Writes in a thread, each after a random pause; records what it saw. Asynchronous, as
    for object storage, unless ``blocking``: then the pump writes from a stage thread."""

    def __init__(
        self,
        fail_at: int | None = None,
        gate: threading.Event | None = None,
        blocking: bool = False,
    ) -> None:
        self.blocking = blocking
        self.ways: list[str] = []  # "task" (async write) or "thread" (thread_write) per call
        self.chunks: list[bytes] = []
        self.buffers: list[object] = []
        self.calls = 0
        self.active = 0
        self.fail_at = fail_at
        self.gate = gate
        self.started = threading.Event()
        self._chance = random.Random(2)

    def _write(self, data: memoryview, pause: float) -> None:
        self.active += 1
        self.started.set()
        try:
            if self.gate is not None:
                self.gate.wait(10)
            time.sleep(pause)
            if self.calls == self.fail_at:
                raise OSError("disk full")
            self.chunks.append(bytes(data))
        finally:
            self.calls += 1
            self.active -= 1

    @property
    def size(self) -> int:
        return sum(map(len, self.chunks))

    async def commit(self, alongside: Awaitable[None] | None = None) -> None:
        raise AssertionError("the pump never commits")

    async def cancel(self) -> None:
        pass

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        assert isinstance(data, memoryview)
        self.ways.append("task")
        self.buffers.append(data.obj)
        await asyncio.to_thread(self._write, data, self._chance.random() * 0.01)

    @property
    def thread_write(self) -> Callable[[memoryview], None] | None:
        return self._write_blocking if self.blocking else None

    def _write_blocking(self, data: memoryview) -> None:
        assert threading.current_thread() is not threading.main_thread()
        self.ways.append("thread")
        self.buffers.append(data.obj)
        self._write(data, self._chance.random() * 0.01)


BOTH_KINDS = pytest.mark.parametrize("blocking", [False, True], ids=["tasks", "thread"])


@BOTH_KINDS
async def test_body_is_written_and_hashed_in_order(blocking: bool) -> None:
    data = os.urandom(PUMP_BUFFERS * WRITE_BUFFER + 2 * WRITE_BUFFER + 12345)
    writer = RecordingWriter(blocking=blocking)
    hasher = ResumableHasher("sha256")
    assert await pump(pieces(data), hasher, writer) == len(data)
    assert b"".join(writer.chunks) == data
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert writer.active == 0


@BOTH_KINDS
@pytest.mark.parametrize("size", [0, 1, 5000, SMALL_BODY, SMALL_BODY + 1, PART + 1])
async def test_bodies_of_sizes_around_the_limits(blocking: bool, size: int) -> None:
    """A small body is hashed in the event loop and written in one step, in a task; a larger
    one goes to the stages, and to the writer's thread function where it has one."""
    data = os.urandom(size)
    writer = RecordingWriter(blocking=blocking)
    hasher = ResumableHasher("sha256")
    assert await pump(pieces(data), hasher, writer) == size
    assert b"".join(writer.chunks) == data
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert set(writer.ways) == {"thread" if blocking and size > SMALL_BODY else "task"}


async def test_through_the_filesystem_driver_with_o_direct(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path, direct_io=True)
    data = os.urandom(3 * WRITE_BUFFER + 999)
    writer = await driver.writer("upload/data")
    hasher = ResumableHasher("sha256")
    await pump(pieces(data, seed=3), hasher, writer)
    await writer.commit()
    assert (tmp_path / "upload/data").read_bytes() == data
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


@BOTH_KINDS
async def test_buffers_are_reused_by_the_next_body(blocking: bool) -> None:
    """Fresh pages cost more than the copy into them, so the next request gets the same ones."""
    data = os.urandom(PUMP_BUFFERS * WRITE_BUFFER)
    first, second = RecordingWriter(blocking=blocking), RecordingWriter(blocking=blocking)
    await pump(pieces(data), ResumableHasher("sha256"), first)
    await pump(pieces(data), ResumableHasher("sha256"), second)
    assert len(set(map(id, first.buffers))) == PUMP_BUFFERS
    assert set(map(id, second.buffers)) == set(map(id, first.buffers))


async def test_kept_buffers_are_released_when_no_upload_runs() -> None:
    pool = BufferPool(4096, deep=2, shallow=1, keep_seconds=0.05)
    first = pool.take()
    mapped = [view.obj for view in first]
    pool.give(first)
    again = pool.take()
    assert {id(b) for b in again} == {id(b) for b in first}  # back to back: the same pages
    pool.give(again)
    await asyncio.sleep(0.2)
    assert all(buffer.closed for buffer in mapped)  # type: ignore[attr-defined]
    assert len(pool.take()) == 2  # fresh ones


async def test_concurrent_bodies_get_fewer_buffers_each() -> None:
    """Memory grows by two buffers, not a whole ring, with every upload running beside another."""
    gate = threading.Event()
    first, second = RecordingWriter(gate=gate), RecordingWriter()
    data = os.urandom(2 * PUMP_BUFFERS * WRITE_BUFFER)
    alone = asyncio.ensure_future(pump(pieces(data), ResumableHasher("sha256"), first))
    assert await asyncio.to_thread(first.started.wait, 10)
    await pump(pieces(data), ResumableHasher("sha256"), second)
    gate.set()
    await alone
    assert len(set(map(id, first.buffers))) == PUMP_BUFFERS
    assert len(set(map(id, second.buffers))) == 2 < PUMP_BUFFERS
    assert b"".join(second.chunks) == data == b"".join(first.chunks)


@BOTH_KINDS
async def test_a_failed_write_stops_the_writes_after_it(blocking: bool) -> None:
    data = os.urandom(6 * WRITE_BUFFER)
    writer = RecordingWriter(fail_at=2, blocking=blocking)
    with pytest.raises(OSError, match="disk full"):
        await pump(pieces(data), ResumableHasher("sha256"), writer)
    assert writer.calls == 3  # the two before it, and the one that failed
    written = b"".join(writer.chunks)
    assert len(writer.chunks) == 2 and written == data[: len(written)]
    assert writer.active == 0


@BOTH_KINDS
async def test_cancelled_pump_waits_for_the_write_in_its_thread(blocking: bool) -> None:
    """A thread still writing after the caller closed the file could hit a reused descriptor."""
    gate = threading.Event()
    writer = RecordingWriter(gate=gate, blocking=blocking)
    data = os.urandom(2 * WRITE_BUFFER)
    pumping = asyncio.ensure_future(pump(pieces(data), ResumableHasher("sha256"), writer))
    assert await asyncio.to_thread(writer.started.wait, 10)
    pumping.cancel()
    await asyncio.sleep(0.05)
    assert not pumping.done()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await pumping
    assert writer.active == 0


async def test_an_idle_stage_takes_a_part_and_a_busy_one_whole_buffers() -> None:
    """A stage that has caught up gets the filled part of a buffer (so little is left when the
    body ends); while it works on that, the rest comes in whole buffers (the fewest steps)."""
    gate = threading.Event()
    writer = RecordingWriter(gate=gate, blocking=True)
    data = os.urandom(PUMP_BUFFERS * WRITE_BUFFER)

    async def even_pieces() -> AsyncIterator[bytes]:  # as hypercorn hands them over
        for start in range(0, len(data), 256 * 1024):
            yield data[start : start + 256 * 1024]

    hasher = ResumableHasher("sha256")
    running = asyncio.ensure_future(pump(even_pieces(), hasher, writer))
    assert await asyncio.to_thread(writer.started.wait, 10)
    gate.set()
    assert await running == len(data)
    sizes = [len(chunk) for chunk in writer.chunks]
    assert sizes == [PART, WRITE_BUFFER - PART] + [WRITE_BUFFER] * (PUMP_BUFFERS - 1)
    assert b"".join(writer.chunks) == data
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
