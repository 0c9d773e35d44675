"""Blob upload sessions, kept entirely in storage so any process can continue one.

After every request the running hash is saved under ``hashstates/<alg>/<offset>``; the next
request (on this process or another replica) resumes hashing from there, and completing an
upload never re-reads its bytes. Received bytes are hashed and written in parallel threads,
in large buffers, and fsynced before the request is acknowledged.

Every request that changes a session (append, complete, cancel) first opens the driver's
writer on its ``data``, which is exclusive across processes: that writer is the session lock.
Under it the session is read again, and the request goes on only if the session still holds
the bytes the request was built on; otherwise (or if another request holds the lock) it is
refused with 416 ``RANGE_INVALID`` and the session's current ``Range``, as for an
out-of-order chunk, and nothing is written. The new hash state is saved before the lock is
released, so the next holder always sees where the last one stopped; completing hides the
session (drops its hash states) before releasing the lock, so no late request can append to
bytes being published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ulid import ULID

from registry.oci.digest import Digest, ResumableHasher
from registry.oci.errors import ErrorCode, RegistryError
from registry.services import paths, walk
from registry.services.blobs import BlobService
from registry.services.pump import pump
from registry.storage.driver import FileWriter, PathBusy, PathNotFound, StorageDriver

log = logging.getLogger("registry.uploads")
_UPLOAD_ID = re.compile(r"[0-9A-Za-z-]{16,64}")


@dataclass(frozen=True, slots=True)
class Upload:
    """Where an upload session stands."""

    name: str
    id: str
    offset: int
    algorithm: str = "sha256"


def upload_range(offset: int) -> str:
    """The ``Range`` header value for an upload holding ``offset`` bytes."""
    return f"0-{max(offset - 1, 0)}"


class UploadService:
    """Start, append to, complete and cancel blob uploads."""

    def __init__(self, driver: StorageDriver, blobs: BlobService) -> None:
        self.driver = driver
        self.blobs = blobs
        self._clean_ups: set[asyncio.Task[None]] = set()

    def _unknown(self, upload_id: str) -> RegistryError:
        return RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, {"upload": upload_id[:64]})

    async def start(self, name: str, algorithm: str = "sha256") -> Upload:
        upload = Upload(name, str(ULID()), 0, algorithm)
        started_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        await self.driver.put_content(paths.upload_started_at(name, upload.id), started_at.encode())
        await self._save_state(upload, ResumableHasher(algorithm))
        return upload

    async def get(self, name: str, upload_id: str) -> Upload:
        """The session ``upload_id`` of ``name``; ``BLOB_UPLOAD_UNKNOWN`` if there is none."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise self._unknown(upload_id)
        try:
            # All three lookups at once; listing sha256's states first is nearly always right.
            algorithms, offsets, stored = await asyncio.gather(
                self.driver.list(f"{paths.upload(name, upload_id)}/hashstates"),
                self._state_offsets(name, upload_id, "sha256"),
                self._data_size(name, upload_id),
            )
            algorithm = next(a for a in algorithms if a in ("sha256", "sha512"))
            if algorithm != "sha256":
                offsets = await self._state_offsets(name, upload_id, algorithm)
            # A state is saved as its bytes are fsynced; after a crash before both are done,
            # the older state (deleted only after both) still matches the data.
            offset = max(o for o in offsets if o <= stored)
        except (PathNotFound, StopIteration, ValueError):
            raise self._unknown(upload_id) from None
        return Upload(name, upload_id, offset, algorithm)

    async def _state_offsets(self, name: str, upload_id: str, algorithm: str) -> list[int]:
        try:
            names = await self.driver.list(paths.upload_hashstates(name, upload_id, algorithm))
        except PathNotFound:
            return []
        return [int(offset) for offset in names if offset.isdigit()]

    async def _data_size(self, name: str, upload_id: str) -> int:
        try:
            return (await self.driver.stat(paths.upload_data(name, upload_id))).size
        except PathNotFound:
            return 0

    def _conflict(self, upload: Upload, why: str) -> RegistryError:
        return RegistryError(
            ErrorCode.RANGE_INVALID,
            why,
            headers={"Range": upload_range(upload.offset), "Location": upload_location(upload)},
        )

    async def _lock(self, upload: Upload) -> FileWriter:
        """Hold the session's lock (its data writer); the session must not have moved on."""
        data = paths.upload_data(upload.name, upload.id)
        try:
            writer = await self.driver.writer(data, upload.offset)
        except PathBusy:
            raise self._conflict(upload, "another request is writing this upload") from None
        except PathNotFound:
            raise self._unknown(upload.id) from None
        try:
            current = await self.get(upload.name, upload.id)
        except BaseException:
            await writer.cancel()
            raise
        if current.offset != upload.offset:
            await writer.cancel()
            raise self._conflict(current, "the upload changed while this request was waiting")
        return writer

    async def _save_state(self, upload: Upload, hasher: ResumableHasher) -> None:
        state = hasher.state() or b""
        path = paths.upload_hashstate(upload.name, upload.id, upload.algorithm, upload.offset)
        await self.driver.put_content(path, state)

    async def _load_hasher(self, upload: Upload) -> ResumableHasher:
        path = paths.upload_hashstate(upload.name, upload.id, upload.algorithm, upload.offset)
        try:
            hasher = ResumableHasher.from_state(
                upload.algorithm, await self.driver.get_content(path)
            )
            if hasher.size == upload.offset:
                return hasher
        except (PathNotFound, ValueError):
            pass
        return await self._rehash(upload, upload.algorithm)

    async def _rehash(self, upload: Upload, algorithm: str) -> ResumableHasher:
        """Hash the stored bytes again (only when no usable saved state exists)."""
        hasher = ResumableHasher(algorithm)
        if upload.offset:
            data = paths.upload_data(upload.name, upload.id)
            async for chunk in self.driver.read(data, 0, upload.offset):
                await asyncio.to_thread(hasher.update, chunk)
        return hasher

    async def append(
        self,
        upload: Upload,
        body: AsyncIterable[bytes],
        start: int | None = None,
        length: int | None = None,
    ) -> tuple[Upload, ResumableHasher]:
        """Add a request body to the session; ``start`` must match its current size."""
        writer = await self._open(upload, start)
        advanced = upload
        try:
            advanced, hasher = await self._append_locked(upload, writer, body, length)
            moved = advanced.offset != upload.offset
            # the new state is saved as the bytes are fsynced, both before the lock goes
            await writer.commit(self._save_state(advanced, hasher) if moved else None)
        except BaseException:
            try:
                if advanced.offset != upload.offset:  # saved, but its bytes are dropped now
                    stale = paths.upload_hashstate(
                        upload.name, upload.id, upload.algorithm, advanced.offset
                    )
                    await walk.delete_quietly(self.driver, stale)
            finally:
                await writer.cancel()
            raise
        if moved:  # the state before is of no use now; nobody needs to wait for its removal
            older = paths.upload_hashstate(upload.name, upload.id, upload.algorithm, upload.offset)
            self._later(f"removing {older}", lambda: walk.delete_quietly(self.driver, older))
        return advanced, hasher

    async def _open(self, upload: Upload, start: int | None) -> FileWriter:
        if start is not None and start != upload.offset:
            raise self._conflict(upload, f"chunk starts at {start}, upload has {upload.offset}")
        return await self._lock(upload)

    async def _append_locked(
        self, upload: Upload, writer: FileWriter, body: AsyncIterable[bytes], length: int | None
    ) -> tuple[Upload, ResumableHasher]:
        """Write ``body`` through ``writer`` (held); where the session stands after it."""
        hasher = await self._load_hasher(upload)
        received = await pump(body, hasher, writer)
        if length is not None and received != length:
            raise RegistryError(
                ErrorCode.SIZE_INVALID, f"expected {length} bytes, received {received}"
            )
        advanced = Upload(upload.name, upload.id, upload.offset + received, upload.algorithm)
        return advanced, hasher

    async def complete(
        self,
        upload: Upload,
        digest: Digest,
        body: AsyncIterable[bytes] | None = None,
        start: int | None = None,
        length: int | None = None,
    ) -> Upload:
        """Verify the content against ``digest``, publish it and link it into the repository."""
        writer = await self._open(upload, start)
        try:
            if body is not None:
                upload, hasher = await self._append_locked(upload, writer, body, length)
            else:
                hasher = await self._load_hasher(upload)
            if digest.algorithm != hasher.algorithm:
                hasher = await self._rehash(upload, digest.algorithm)
            actual = hasher.digest()
            # From here the session is over whatever happens: hide it before the lock goes.
            with contextlib.suppress(PathNotFound):
                await self.driver.delete(f"{paths.upload(upload.name, upload.id)}/hashstates")
            await writer.commit()
        except BaseException:
            await writer.cancel()
            raise
        if actual != digest:
            await self._remove(upload)
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                {"expected": str(digest), "actual": str(actual)},
            )
        stored_before = await self.blobs.exists(digest) is not None
        if not stored_before:
            data = paths.upload_data(upload.name, upload.id)
            if upload.offset == 0:
                await self.driver.put_content(paths.blob_data(digest), b"")
            else:
                await self.driver.move(data, paths.blob_data(digest))
        await self.blobs.link(upload.name, digest)
        if stored_before:  # the session still holds all its bytes
            # unlinking a large file is slow (160 ms a GiB on ext4 here), and nobody waits
            # for these bytes: the session is hidden already; expiry removes them after a crash
            self._later(f"removing finished upload {upload.id}", lambda: self._remove(upload))
        else:
            await self._remove(upload)
        return upload

    async def cancel(self, upload: Upload) -> None:
        """Abandon the session and its bytes (once no other request is writing it)."""
        writer = await self._lock(upload)
        try:
            await self._remove(upload)
        finally:
            await writer.cancel()

    async def _remove(self, upload: Upload) -> None:
        with contextlib.suppress(PathNotFound):
            await self.driver.delete(paths.upload(upload.name, upload.id))

    def _later(self, what: str, step: Callable[[], Awaitable[object]]) -> None:
        """Run ``step`` after the response: a clean-up nobody waits for (``settle`` does)."""

        async def run() -> None:
            try:
                await step()
            except Exception:  # nobody awaits this: say so; expiry or completion tidies up
                log.warning("%s failed", what, exc_info=True)

        task = asyncio.ensure_future(run())
        self._clean_ups.add(task)
        task.add_done_callback(self._clean_ups.discard)

    async def settle(self) -> None:
        """Wait for the clean-ups started so far (at shutdown, and in tests)."""
        if self._clean_ups:
            await asyncio.wait(set(self._clean_ups))

    @staticmethod
    async def expire(
        driver: StorageDriver, max_age: float, now: float | None = None, dry_run: bool = False
    ) -> int:
        """Delete sessions idle for more than ``max_age`` seconds; how many (would) go.

        A session's age is its last write (data, hash state or start). One that a request is
        writing right now is never touched: its lock is taken first, and a busy one skipped.
        """
        cutoff = (time.time() if now is None else now) - max_age
        purged = 0
        for name in await walk.repositories(driver):
            for upload_id in await walk.listing(driver, paths.uploads(name)):
                base = paths.upload(name, upload_id)
                infos = [
                    await walk.stat_or_none(driver, path)
                    for path in (base, f"{base}/data", f"{base}/startedat", f"{base}/hashstates")
                ]
                seen = [info.modified for info in infos if info is not None]
                if not seen or max(seen) >= cutoff:
                    continue
                if dry_run:
                    purged += 1
                    continue
                size = infos[1].size if infos[1] is not None else 0
                try:
                    lock = await driver.writer(f"{base}/data", size)
                except (PathBusy, PathNotFound):
                    continue
                try:
                    if await walk.delete_quietly(driver, base):
                        purged += 1
                finally:
                    await lock.cancel()
        return purged


def upload_location(upload: Upload) -> str:
    return f"/v2/{upload.name}/blobs/uploads/{upload.id}"
