"""Receiving a blob body: hashed and written at the same time, from reused page-aligned buffers.

The body is copied into a ring of large buffers. Two stages, each running its steps in order
in a thread of its own, take the buffers: the hash, and the writer. A buffer is filled again
once both stages are past it. So the disk and the hash each work back to back while the body
keeps arriving. A stage that has caught up takes the filled part of a buffer before the
buffer is full, so when the last byte comes little is left to hash and write; a stage that is
behind gets whole buffers, the fewest steps.

Handing a part to a stage thread costs the event loop a queue put; it is woken only when it
waits for a buffer (or for the end). A writer whose writes are asynchronous (object storage)
gets whole buffers, each written in a task once the one before it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import queue
import threading
from collections.abc import AsyncIterable, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from registry.oci.digest import ResumableHasher
from registry.storage.driver import FileWriter

WRITE_BUFFER = 4 * 1024 * 1024
PUMP_BUFFERS = 3
PART = 2 * 1024 * 1024  # the least handed to an idle stage thread before its buffer is full
SMALL_BODY = 64 * 1024  # hashed in the event loop (30 us), saving two stage threads' start

# Each running pump holds one or two of these threads for as long as its body lasts, so they
# are kept apart from the default executor that every other file operation uses.
_STAGE_THREADS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="pump")


class _Stage(Protocol):
    def idle_for(self, ready: int) -> bool:
        """Whether to hand ``ready`` bytes over before their buffer is full."""
        ...

    def hand_over(self, data: memoryview) -> int:
        """Queue ``data``; a ticket for ``reached``."""
        ...

    async def reached(self, ticket: int) -> None:
        """Wait until the step ``ticket`` and all before it are done; raise what failed."""
        ...

    def close(self) -> Awaitable[object]:
        """No more steps; done when nothing of this stage runs any more."""
        ...


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ThreadStage:
    """Runs a blocking function on each part, in order, in a pool thread of its own.

    After a step fails the rest are skipped (and ``reached`` raises its error), so nothing is
    written past a failed write.
    """

    def __init__(self, step: Callable[[memoryview], object]) -> None:
        self._step = step
        self._loop = asyncio.get_running_loop()
        self._parts: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._handed = 0
        self._done = 0
        self._error: BaseException | None = None
        self._waiting: tuple[int, asyncio.Future[None]] | None = None
        self._finished = self._loop.run_in_executor(_STAGE_THREADS, self._work)

    def idle_for(self, ready: int) -> bool:
        """A thread that has done all it was given takes a part (then the last one is small
        when the body ends); a busy one gets whole buffers (fewer steps for a fast body)."""
        return ready >= PART and self._done == self._handed

    def hand_over(self, data: memoryview) -> int:
        self._handed += 1
        self._parts.put(data)
        return self._handed

    async def reached(self, ticket: int) -> None:
        with self._lock:
            if self._done >= ticket or self._error is not None:
                future = None
            else:
                future = self._waiting = (ticket, self._loop.create_future())
        if future is not None:
            await future[1]
        if self._error is not None:
            raise self._error

    def close(self) -> Awaitable[object]:
        self._parts.put(None)
        return self._finished

    def _work(self) -> None:
        while (data := self._parts.get()) is not None:
            if self._error is None:
                try:
                    self._step(data)
                except BaseException as error:  # ``reached`` raises it in the event loop
                    self._error = error
            with self._lock:
                self._done += 1
                waiting = self._waiting
                if waiting is not None and (self._done >= waiting[0] or self._error is not None):
                    self._waiting = None
                    self._loop.call_soon_threadsafe(_resolve, waiting[1])


class TaskStage:
    """Runs an asynchronous function on each whole buffer, in order, each in a task."""

    def __init__(self, step: Callable[[memoryview], Awaitable[None]]) -> None:
        self._step = step
        self._steps: list[asyncio.Future[None]] = []

    def idle_for(self, ready: int) -> bool:
        return False  # a task per part would cost the event loop more than the part saves

    def hand_over(self, data: memoryview) -> int:
        previous = self._steps[-1] if self._steps else None

        async def run() -> None:
            if previous is not None:
                await previous
            await self._step(data)

        self._steps.append(asyncio.ensure_future(run()))
        return len(self._steps)

    async def reached(self, ticket: int) -> None:
        if ticket:
            await self._steps[ticket - 1]

    async def close(self) -> None:
        if self._steps:  # steps run in order: once the last is done, all are
            await asyncio.wait([self._steps[-1]])
        for step in self._steps:
            if not step.cancelled():
                step.exception()  # retrieved: the error that ended it is raised by ``reached``


class BufferPool:
    """Page-aligned buffers for the pumps of this process, kept for the next request.

    Touching fresh pages costs these VMs far more than filling used ones again: 2.4 ms for a
    new 4 MiB buffer against 0.07 ms, which was 5 ms of every 16 MiB chunk of an upload. A
    pump running alone gets ``deep`` buffers; while others run, each gets ``shallow`` (they
    share the CPU anyway), so memory grows slowly with concurrent uploads. At most ``deep``
    buffers are kept, and only until no pump has run for ``keep_seconds``.
    """

    def __init__(self, size: int, deep: int, shallow: int, keep_seconds: float) -> None:
        self.size = size
        self.deep = deep
        self.shallow = shallow
        self.keep_seconds = keep_seconds
        self.running = 0
        self._free: list[memoryview] = []
        self._release: asyncio.TimerHandle | None = None

    def take(self) -> list[memoryview]:
        if self._release is not None:
            self._release.cancel()
            self._release = None
        count = self.shallow if self.running else self.deep
        self.running += 1
        return [self._take_one() for _ in range(count)]

    def _take_one(self) -> memoryview:
        return self._free.pop() if self._free else memoryview(mmap.mmap(-1, self.size))

    def give(self, buffers: list[memoryview], reusable: bool = True) -> None:
        """Take back what ``take`` gave; ``reusable`` only if no thread can still use them."""
        self.running -= 1
        if reusable:
            self._free.extend(buffers[: max(self.deep - len(self._free), 0)])
        if not self.running and self._free:
            loop = asyncio.get_running_loop()
            self._release = loop.call_later(self.keep_seconds, self._unmap)

    def _unmap(self) -> None:
        self._release = None
        for view in self._free:
            buffer = view.obj
            view.release()
            if isinstance(buffer, mmap.mmap):
                with contextlib.suppress(BufferError):  # still exported: freed when unused
                    buffer.close()
        self._free.clear()


BUFFERS = BufferPool(WRITE_BUFFER, deep=PUMP_BUFFERS, shallow=2, keep_seconds=0.5)


def _write_stage(writer: FileWriter) -> _Stage:
    blocking = writer.thread_write
    return ThreadStage(blocking) if blocking is not None else TaskStage(writer.write)


async def pump(body: AsyncIterable[bytes], hasher: ResumableHasher, writer: FileWriter) -> int:
    """Hash ``body`` and write it through ``writer``; how many bytes it had.

    Every step is finished before this returns, never cancelled: a thread still writing after
    the file is closed could hit a reused descriptor, and one still reading a buffer after it
    was handed to the next request could hash or write the wrong bytes.
    """
    received = 0
    views = BUFFERS.take()
    stages: list[_Stage] = []  # the hash, then the write; started once a part is ready

    def start_stages() -> None:
        stages.append(ThreadStage(hasher.update))
        stages.append(_write_stage(writer))

    try:
        # per buffer, the tickets of its last step in each stage
        in_use: list[list[int] | None] = [None] * len(views)
        handed = [0, 0]  # how far into the current buffer each stage has it
        tickets = [0, 0]
        current, filled = 0, 0
        async for chunk in body:
            received += len(chunk)
            position = 0
            while position < len(chunk):
                view = views[current]
                taken = min(WRITE_BUFFER - filled, len(chunk) - position)
                view[filled : filled + taken] = chunk[position : position + taken]
                filled += taken
                position += taken
                whole = filled == WRITE_BUFFER
                ready = filled if whole else filled - filled % mmap.PAGESIZE
                if not stages and ready >= PART:
                    start_stages()
                for index, stage in enumerate(stages):
                    if whole or stage.idle_for(ready - handed[index]):
                        tickets[index] = stage.hand_over(view[handed[index] : ready])
                        handed[index] = ready
                if whole:
                    in_use[current] = list(tickets)
                    current, filled, handed = (current + 1) % len(views), 0, [0, 0]
                    if (waiting := in_use[current]) is not None:
                        for stage, ticket in zip(stages, waiting, strict=True):
                            await stage.reached(ticket)
        if not stages and filled <= SMALL_BODY:
            # all of it in the first buffer, and small: hashed here, written in one step
            hasher.update(views[0][:filled])
            stages.append(TaskStage(writer.write))
            await stages[0].reached(stages[0].hand_over(views[0][:filled]))
            return received
        if not stages:
            start_stages()
        for index, stage in enumerate(stages):
            if filled > handed[index]:
                tickets[index] = stage.hand_over(views[current][handed[index] : filled])
            if tickets[index]:
                await stage.reached(tickets[index])
    finally:
        # Each stage runs in order, so once its last step is done all of its steps are.
        closed = [asyncio.ensure_future(stage.close()) for stage in stages]
        try:
            if closed:
                await asyncio.wait(closed)
        finally:
            BUFFERS.give(views, reusable=all(step.done() for step in closed))
    return received
