"""Work the server does on timers: purge expired upload sessions, optional online GC.

Started by the application's lifespan, stopped (cancelled) at shutdown. With several workers
each runs its own timers; the collection lock makes all but one of them skip a given run, and
purging an upload takes that upload's lock, so overlapping timers are harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from config import Settings
from registry.services.gc import CollectionBusy, GarbageCollector
from registry.services.uploads import UploadService
from registry.storage.driver import StorageDriver

log = logging.getLogger("registry.background")


async def every(seconds: float, job: Callable[[], Awaitable[None]]) -> None:
    """Run ``job`` every ``seconds`` (first run after one period); log and go on on errors."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background job failed")


def timers(settings: Settings, driver: StorageDriver) -> list[Coroutine[Any, Any, None]]:
    """The timed coroutines ``settings`` ask for."""
    gc = settings.gc

    async def purge_uploads() -> None:
        purged = await UploadService.expire(driver, gc.upload_max_age_seconds)
        if purged:
            log.info("purged %d expired upload sessions", purged)

    async def collect() -> None:
        collector = GarbageCollector(
            driver,
            grace=gc.grace_seconds,
            delete_untagged=gc.delete_untagged,
            upload_max_age=gc.upload_max_age_seconds,
        )
        try:
            report = await collector.run()
        except CollectionBusy:
            return
        log.info(
            "gc: removed %d manifests, %d blobs (%d bytes) in %.1f s",
            report.manifests_removed,
            report.blobs_removed,
            report.bytes_freed,
            report.seconds,
        )

    timed = [every(gc.upload_purge_interval_seconds, purge_uploads)]
    if gc.interval_seconds > 0:
        timed.append(every(gc.interval_seconds, collect))
    return timed


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the timers with the server; at shutdown cancel them, let upload removals finish and
    close the storage driver."""
    settings: Settings = app.state.settings
    tasks = [asyncio.create_task(timer) for timer in timers(settings, app.state.services.driver)]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app.state.services.uploads.settle()
        await app.state.services.driver.close()
