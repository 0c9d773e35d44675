"""Listing what storage holds: repositories, blobs, revisions, tags, links and uploads.

Used by garbage collection, scrub and upload expiry. Every function tolerates paths that
vanish while it walks (a concurrent delete) and skips entries that are not valid names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from registry.oci.digest import HEX_LENGTH, Digest
from registry.oci.errors import RegistryError
from registry.services import paths
from registry.storage.driver import FileInfo, PathNotFound, StorageDriver

T = TypeVar("T")
CONCURRENCY = 16


async def listing(driver: StorageDriver, path: str) -> list[str]:
    """A directory's children, or none if it does not exist."""
    try:
        return sorted(await driver.list(path))
    except PathNotFound:
        return []


async def stat_or_none(driver: StorageDriver, path: str) -> FileInfo | None:
    try:
        return await driver.stat(path)
    except PathNotFound:
        return None


async def bounded(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` with at most ``CONCURRENCY`` in flight; results in order."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))


def _digest(algorithm: str, encoded: str) -> Digest | None:
    if algorithm not in HEX_LENGTH:
        return None
    try:
        return Digest.parse(f"{algorithm}:{encoded}")
    except RegistryError:
        return None


async def digests_under(driver: StorageDriver, base: str) -> list[Digest]:
    """Digests laid out as ``<base>/<alg>/<hex>`` (links, revisions, referrers)."""
    found: list[Digest] = []
    for algorithm in await listing(driver, base):
        for encoded in await listing(driver, f"{base}/{algorithm}"):
            digest = _digest(algorithm, encoded)
            if digest is not None:
                found.append(digest)
    return found


async def repositories(driver: StorageDriver) -> list[str]:
    """Every repository name (any folder holding ``_manifests``, ``_layers`` or ``_uploads``)."""
    found: list[str] = []
    pending = [""]
    while pending:
        prefix = pending.pop()
        children = await listing(driver, f"{paths.REPOSITORIES}/{prefix}".rstrip("/"))
        if prefix and any(c in ("_manifests", "_layers", "_uploads") for c in children):
            found.append(prefix.rstrip("/"))
        pending.extend(f"{prefix}{c}/" for c in children if c[:1].isalnum())
    return sorted(found)


@dataclass(frozen=True, slots=True)
class Link:
    """A link file: which digest, and when it was last written."""

    digest: Digest
    modified: float


async def links(driver: StorageDriver, base: str) -> list[Link]:
    """The ``<base>/<alg>/<hex>/link`` files with their modification times."""
    digests = await digests_under(driver, base)
    infos = await bounded(
        [partial(stat_or_none, driver, f"{base}/{d.algorithm}/{d.hex}/link") for d in digests]
    )
    return [Link(d, i.modified) for d, i in zip(digests, infos, strict=True) if i is not None]


async def read_link(driver: StorageDriver, path: str) -> Digest | None:
    try:
        return Digest.parse((await driver.get_content(path)).decode().strip())
    except (PathNotFound, RegistryError, UnicodeDecodeError):
        return None


async def tags(driver: StorageDriver, name: str) -> dict[str, Digest]:
    """Each tag of ``name`` and the digest it points at now."""
    names = await listing(driver, paths.tags(name))
    targets = await bounded(
        [partial(read_link, driver, paths.tag_current_link(name, t)) for t in names]
    )
    return {t: d for t, d in zip(names, targets, strict=True) if d is not None}


@dataclass(frozen=True, slots=True)
class StoredBlob:
    digest: Digest
    size: int
    modified: float


async def blobs(driver: StorageDriver) -> AsyncIterator[StoredBlob]:
    """Every blob in the store, one hash prefix folder at a time."""
    for algorithm in await listing(driver, paths.blobs()):
        if algorithm not in HEX_LENGTH:
            continue
        for prefix in await listing(driver, f"{paths.blobs()}/{algorithm}"):
            for encoded in await listing(driver, f"{paths.blobs()}/{algorithm}/{prefix}"):
                digest = _digest(algorithm, encoded)
                if digest is None or digest.hex[:2] != prefix:
                    continue
                info = await stat_or_none(driver, paths.blob_data(digest))
                if info is not None:
                    yield StoredBlob(digest, info.size, info.modified)


async def delete_quietly(driver: StorageDriver, path: str) -> bool:
    """Delete ``path``; False if it was already gone."""
    with contextlib.suppress(PathNotFound):
        await driver.delete(path)
        return True
    return False
