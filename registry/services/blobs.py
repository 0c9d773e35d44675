"""Blobs in a repository: stat, read, link, mount, unlink."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from registry.oci.digest import Digest
from registry.oci.errors import ErrorCode, RegistryError
from registry.services import paths
from registry.storage.driver import PathNotFound, SendableFile, StorageDriver, StorageError

# A link used (pulled, checked before a push) is rewritten at most this often, so garbage
# collection's grace window counts from the last use, not only from the push.
LINK_REFRESH = 600.0


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int


class BlobService:
    """Content-addressed blobs, visible in a repository only once linked into it."""

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver

    async def _is_linked(self, name: str, digest: Digest) -> bool:
        for link in (paths.layer_link(name, digest), paths.manifest_revision_link(name, digest)):
            if await self.touch_link(link):
                return True
        return False

    async def touch_link(self, link: str) -> bool:
        """Whether ``link`` exists; if last written long ago, write it again (a use)."""
        try:
            info = await self.driver.stat(link)
        except PathNotFound:
            return False
        if info.modified < time.time() - LINK_REFRESH:
            with contextlib.suppress(StorageError):  # a read-only store still serves
                await self.driver.put_content(link, await self.driver.get_content(link))
        return True

    async def exists(self, digest: Digest) -> int | None:
        """The size of a stored blob, in any repository, or None."""
        try:
            return (await self.driver.stat(paths.blob_data(digest))).size
        except PathNotFound:
            return None

    async def stat(self, name: str, digest: Digest) -> BlobInfo:
        """A blob linked into ``name``; ``BLOB_UNKNOWN`` otherwise."""
        size = await self.exists(digest) if await self._is_linked(name, digest) else None
        if size is None:
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, {"digest": str(digest)})
        return BlobInfo(digest, size)

    def sendable_file(self, digest: Digest, drop_behind: bool = False) -> SendableFile | None:
        """The blob's file, for a server that sends it by path, when the store prefers that."""
        return self.driver.sendable_file(paths.blob_data(digest), drop_behind)

    def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        return self.driver.read(paths.blob_data(digest), offset, length)

    async def redirect_url(self, digest: Digest) -> str | None:
        return await self.driver.redirect_url(paths.blob_data(digest))

    async def link(self, name: str, digest: Digest) -> None:
        await self.driver.put_content(paths.layer_link(name, digest), str(digest).encode())

    async def mount(self, name: str, digest: Digest, source: str) -> bool:
        """Link a blob that ``source`` has into ``name``; False if ``source`` lacks it."""
        try:
            await self.stat(source, digest)
        except RegistryError:
            return False
        await self.link(name, digest)
        return True

    async def unlink(self, name: str, digest: Digest) -> None:
        """Remove a blob from a repository (the bytes stay until garbage collection)."""
        try:
            await self.driver.delete(paths.layer_link(name, digest))
        except PathNotFound:
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, {"digest": str(digest)}) from None
