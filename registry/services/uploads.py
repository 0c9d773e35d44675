"""Blob upload sessions, kept entirely in storage so any process can continue one.

After every request the running hash is saved under ``hashstates/<alg>/<offset>``; the next
request (on this process or another replica) resumes hashing from there, and completing an
upload never re-reads its bytes. Received bytes are hashed and written in parallel threads,
in large buffers, and fsynced before the request is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import re
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import UTC, datetime

from ulid import ULID

from registry.oci.digest import Digest, ResumableHasher
from registry.oci.errors import ErrorCode, RegistryError
from registry.services import paths
from registry.services.blobs import BlobService
from registry.storage.driver import FileWriter, PathNotFound, StorageDriver

_UPLOAD_ID = re.compile(r"[0-9A-Za-z-]{16,64}")
WRITE_BUFFER = 4 * 1024 * 1024


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
            algorithms = await self.driver.list(f"{paths.upload(name, upload_id)}/hashstates")
            algorithm = next(a for a in algorithms if a in ("sha256", "sha512"))
            offsets = await self.driver.list(paths.upload_hashstates(name, upload_id, algorithm))
            offset = max(int(o) for o in offsets if o.isdigit())
        except (PathNotFound, StopIteration, ValueError):
            raise self._unknown(upload_id) from None
        return Upload(name, upload_id, offset, algorithm)

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
        if start is not None and start != upload.offset:
            raise RegistryError(
                ErrorCode.RANGE_INVALID,
                f"chunk starts at {start}, upload has {upload.offset} bytes",
                headers={"Range": upload_range(upload.offset), "Location": upload_location(upload)},
            )
        hasher = await self._load_hasher(upload)
        writer = await self.driver.writer(paths.upload_data(upload.name, upload.id), upload.offset)
        try:
            received = await _pump(body, hasher, writer)
            if length is not None and received != length:
                raise RegistryError(
                    ErrorCode.SIZE_INVALID, f"expected {length} bytes, received {received}"
                )
            await writer.commit()
        except BaseException:
            await writer.cancel()
            raise
        if received == 0:
            return upload, hasher
        advanced = Upload(upload.name, upload.id, upload.offset + received, upload.algorithm)
        await self._save_state(advanced, hasher)
        stale = paths.upload_hashstate(upload.name, upload.id, upload.algorithm, upload.offset)
        with contextlib.suppress(PathNotFound):
            await self.driver.delete(stale)
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
        if body is not None:
            upload, hasher = await self.append(upload, body, start, length)
        else:
            hasher = await self._load_hasher(upload)
        if digest.algorithm != hasher.algorithm:
            hasher = await self._rehash(upload, digest.algorithm)
        actual = hasher.digest()
        if actual != digest:
            await self.cancel(upload)
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                {"expected": str(digest), "actual": str(actual)},
            )
        if await self.blobs.exists(digest) is None:
            data = paths.upload_data(upload.name, upload.id)
            if upload.offset == 0:
                await self.driver.put_content(paths.blob_data(digest), b"")
            else:
                await self.driver.move(data, paths.blob_data(digest))
        await self.blobs.link(upload.name, digest)
        await self.cancel(upload)
        return upload

    async def cancel(self, upload: Upload) -> None:
        try:
            await self.driver.delete(paths.upload(upload.name, upload.id))
        except PathNotFound:
            raise self._unknown(upload.id) from None


def upload_location(upload: Upload) -> str:
    return f"/v2/{upload.name}/blobs/uploads/{upload.id}"


async def _consume(data: memoryview, hasher: ResumableHasher, writer: FileWriter) -> None:
    await asyncio.gather(asyncio.to_thread(hasher.update, data), writer.write(data))


async def _pump(body: AsyncIterable[bytes], hasher: ResumableHasher, writer: FileWriter) -> int:
    """Hash and write ``body`` in large buffers, one buffer in flight while the next fills.

    The two buffers are page-aligned (mmap), so a writer using O_DIRECT can write them as
    they are. A buffer handed to the threads is always finished (shielded from cancellation,
    awaited on the way out): a thread still writing after the file is closed could hit a
    reused descriptor.
    """
    received = 0
    buffers = (mmap.mmap(-1, WRITE_BUFFER), mmap.mmap(-1, WRITE_BUFFER))
    views = [memoryview(buffer) for buffer in buffers]
    current, filled = 0, 0
    pending: asyncio.Future[None] | None = None
    try:
        async for chunk in body:
            received += len(chunk)
            position = 0
            while position < len(chunk):
                taken = min(WRITE_BUFFER - filled, len(chunk) - position)
                views[current][filled : filled + taken] = chunk[position : position + taken]
                filled += taken
                position += taken
                if filled == WRITE_BUFFER:
                    if pending is not None:
                        await asyncio.shield(pending)
                    pending = asyncio.ensure_future(_consume(views[current], hasher, writer))
                    current, filled = 1 - current, 0
        if pending is not None:
            await asyncio.shield(pending)
        if filled:
            pending = asyncio.ensure_future(_consume(views[current][:filled], hasher, writer))
            await asyncio.shield(pending)
    finally:
        if pending is not None:
            if not pending.done():
                await asyncio.wait([pending])  # unlike gather, never cancels what it waits for
            if not pending.cancelled():
                pending.exception()  # mark retrieved; the error that ended the loop propagates
    return received
