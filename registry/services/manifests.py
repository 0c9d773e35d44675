"""Manifests by tag and digest, tags, the catalog and the referrers index."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from registry.oci.digest import Digest
from registry.oci.errors import ErrorCode, RegistryError
from registry.oci.manifest import Descriptor, Manifest, parse_manifest, stored_media_type
from registry.services import paths
from registry.services.blobs import BlobService
from registry.services.gc import tombstoned
from registry.storage.driver import PathNotFound, StorageDriver


@dataclass(frozen=True, slots=True)
class StoredManifest:
    """A manifest as served: the exact bytes pushed, with their media type and digest."""

    raw: bytes
    media_type: str
    digest: Digest


def _manifest_unknown(reference: str | Digest) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_UNKNOWN, {"reference": str(reference)})


def _paginate(items: list[str], n: int | None, last: str | None) -> tuple[list[str], bool]:
    """Sorted ``items`` after ``last``, at most ``n``; and whether more follow."""
    ordered = sorted(items)
    if last is not None:
        ordered = [item for item in ordered if item > last]
    if n is None or len(ordered) <= n:
        return ordered, False
    return ordered[:n], True


class ManifestService:
    """Store, fetch and delete manifests; list tags, repositories and referrers."""

    def __init__(
        self,
        driver: StorageDriver,
        blobs: BlobService,
        immutable_tag: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.driver = driver
        self.blobs = blobs
        self.immutable_tag = immutable_tag or (lambda name, tag: False)

    def _refuse_immutable(self, name: str, tag: str, current: Digest | None) -> None:
        raise RegistryError(
            ErrorCode.DENIED,
            {"name": name, "tag": tag, "digest": str(current) if current else None},
            message=f"tag {tag} is immutable in {name}: it cannot be moved or deleted",
        )

    async def _read_link(self, path: str) -> Digest | None:
        try:
            return Digest.parse((await self.driver.get_content(path)).decode().strip())
        except (PathNotFound, RegistryError, UnicodeDecodeError):
            return None

    async def _has_revision(self, name: str, digest: Digest) -> bool:
        return await self.blobs.touch_link(paths.manifest_revision_link(name, digest))

    async def resolve(self, name: str, reference: str | Digest) -> Digest:
        """The digest a tag points at (or the digest itself) if ``name`` has that manifest."""
        digest = (
            reference
            if isinstance(reference, Digest)
            else await self._read_link(paths.tag_current_link(name, reference))
        )
        if digest is None or not await self._has_revision(name, digest):
            raise _manifest_unknown(reference)
        return digest

    async def get(self, name: str, reference: str | Digest) -> StoredManifest:
        digest = await self.resolve(name, reference)
        try:
            raw = await self.driver.get_content(paths.blob_data(digest))
        except PathNotFound:
            raise _manifest_unknown(reference) from None
        return StoredManifest(raw, stored_media_type(raw), digest)

    async def put(
        self,
        name: str,
        reference: str | Digest,
        raw: bytes,
        content_type: str | None,
        tags: tuple[str, ...] = (),
    ) -> Manifest:
        """Validate and store a manifest, then point ``reference`` (if a tag) and ``tags`` at it."""
        manifest = parse_manifest(raw, content_type)
        digest = manifest.digest
        if isinstance(reference, Digest):
            digest = Digest.of(raw, reference.algorithm)
            if digest != reference:
                raise RegistryError(
                    ErrorCode.DIGEST_INVALID,
                    {"expected": str(reference), "actual": str(digest)},
                )
        else:
            tags = (reference, *tags)
        for tag in dict.fromkeys(tags):
            if self.immutable_tag(name, tag):
                current = await self._read_link(paths.tag_current_link(name, tag))
                if current is not None and current != digest:
                    self._refuse_immutable(name, tag, current)
        missing = await self._missing_reference(name, manifest)
        if missing is not None:
            raise RegistryError(ErrorCode.MANIFEST_BLOB_UNKNOWN, {"digest": str(missing)})
        if await self.blobs.exists(digest) is None:
            await self.driver.put_content(paths.blob_data(digest), raw)
        if manifest.subject is not None:
            await self.driver.put_content(
                paths.referrer_link(name, manifest.subject.digest, digest), str(digest).encode()
            )
        existed = await self._has_revision(name, digest)
        revision = paths.manifest_revision_link(name, digest)
        await self.driver.put_content(revision, str(digest).encode())
        await self._check_not_being_swept(name, manifest, existed)
        for tag in dict.fromkeys(tags):
            await self.driver.put_content(
                paths.tag_index_link(name, tag, digest), str(digest).encode()
            )
            await self.driver.put_content(paths.tag_current_link(name, tag), str(digest).encode())
        return manifest

    async def _check_not_being_swept(self, name: str, manifest: Manifest, existed: bool) -> None:
        """After the revision is written: give it back if a collection swept or sweeps its parts.

        Tombstones first, then everything the manifest needs, again. A collection whose
        re-check ran before the revision was written either still has its tombstones down
        (seen here) or has finished its sweep, and then what it deleted is missing now; one
        whose re-check runs later sees the revision and spares its parts (registry.services.gc).
        """
        digest = manifest.digest
        candidates = [paths.blob_tombstone(digest), paths.revision_tombstone(name, digest)]
        for descriptor in manifest.blobs:
            candidates.append(paths.blob_tombstone(descriptor.digest))
            candidates.append(paths.layer_tombstone(name, descriptor.digest))
        for descriptor in manifest.manifests:
            candidates.append(paths.blob_tombstone(descriptor.digest))
            candidates.append(paths.revision_tombstone(name, descriptor.digest))
        found = await tombstoned(self.driver, candidates)
        if found is not None:
            missing = found.rsplit("/", 2)[-2] + ":" + found.rsplit("/", 1)[-1]
        elif await self._lacks_manifest(name, digest):
            missing = str(digest)
        elif (reference := await self._missing_reference(name, manifest)) is not None:
            missing = str(reference)
        else:
            return
        if not existed:
            await self._delete_quietly(paths.manifest_revision_link(name, digest))
        raise RegistryError(
            ErrorCode.MANIFEST_BLOB_UNKNOWN,
            {"digest": missing, "gc": True},
            message="a referenced blob or manifest is being garbage collected; push it again",
        )

    async def _lacks_manifest(self, name: str, digest: Digest) -> bool:
        """Whether ``name`` is missing the manifest's revision link or its bytes."""
        if await self.blobs.exists(digest) is None:
            return True
        return not await self._has_revision(name, digest)

    async def _missing_reference(self, name: str, manifest: Manifest) -> Digest | None:
        """A blob or child manifest ``manifest`` references that ``name`` lacks, if any."""

        async def blob_missing(descriptor: Descriptor) -> bool:
            try:
                await self.blobs.stat(name, descriptor.digest)
                return False
            except RegistryError:
                return True

        checks = [blob_missing(d) for d in manifest.blobs]
        checks += [self._lacks_manifest(name, d.digest) for d in manifest.manifests]
        descriptors = [*manifest.blobs, *manifest.manifests]
        for descriptor, missing in zip(descriptors, await asyncio.gather(*checks), strict=True):
            if missing:
                return descriptor.digest
        return None

    async def delete(self, name: str, reference: str | Digest) -> None:
        """Delete a tag, or a manifest with every tag pointing at it and its referrer entry."""
        if not isinstance(reference, Digest):
            current = await self.resolve(name, reference)
            if self.immutable_tag(name, reference):
                self._refuse_immutable(name, reference, current)
            await self.driver.delete(paths.tag(name, reference))
            return
        stored = await self.get(name, reference)
        tags = [
            tag
            for tag in await self._list(paths.tags(name))
            if await self._read_link(paths.tag_current_link(name, tag)) == reference
        ]
        for tag in tags:
            if self.immutable_tag(name, tag):
                self._refuse_immutable(name, tag, reference)
        for tag in tags:
            await self._delete_quietly(paths.tag(name, tag))
        try:
            subject = parse_manifest(stored.raw, stored.media_type).subject
        except RegistryError:
            subject = None
        if subject is not None:
            await self._delete_quietly(paths.referrer_link(name, subject.digest, reference))
        await self._delete_quietly(paths.manifest_revision_link(name, reference))

    async def _delete_quietly(self, path: str) -> None:
        with contextlib.suppress(PathNotFound):
            await self.driver.delete(path)

    async def _list(self, path: str) -> list[str]:
        try:
            return await self.driver.list(path)
        except PathNotFound:
            return []

    async def tags(self, name: str, n: int | None, last: str | None) -> tuple[list[str], bool]:
        """A page of ``name``'s tags; ``NAME_UNKNOWN`` if the repository does not exist."""
        try:
            names = await self.driver.list(paths.tags(name))
        except PathNotFound:
            try:  # object stores keep no empty folders: any key under the repository counts
                await self.driver.stat(paths.repository(name))
            except PathNotFound:
                raise RegistryError(ErrorCode.NAME_UNKNOWN, {"name": name}) from None
            names = []
        current = await asyncio.gather(
            *(self._read_link(paths.tag_current_link(name, tag)) for tag in names)
        )
        return _paginate([t for t, d in zip(names, current, strict=True) if d], n, last)

    async def repositories(self, n: int | None, last: str | None) -> tuple[list[str], bool]:
        """A page of the catalog: every repository that holds manifests."""
        found: list[str] = []
        pending = [""]
        while pending:
            prefix = pending.pop()
            base = f"{paths.REPOSITORIES}/{prefix}".rstrip("/")
            for child in await self._list(base):
                if child == "_manifests":
                    found.append(prefix.rstrip("/"))
                elif not child.startswith("_") and not child.startswith("."):
                    pending.append(f"{prefix}{child}/")
        return _paginate([name for name in found if name], n, last)

    async def referrers(
        self, name: str, subject: Digest, artifact_type: str | None
    ) -> list[Descriptor]:
        """The manifests in ``name`` whose subject is ``subject``, optionally of one type."""
        base = paths.referrers(name, subject)
        found: list[Descriptor] = []
        for algorithm in await self._list(base):
            for encoded in await self._list(f"{base}/{algorithm}"):
                try:
                    digest = Digest.parse(f"{algorithm}:{encoded}")
                    stored = await self.get(name, digest)
                    descriptor = parse_manifest(stored.raw, stored.media_type).as_referrer()
                except RegistryError:
                    continue
                if artifact_type is None or descriptor.artifact_type == artifact_type:
                    found.append(descriptor)
        return sorted(found, key=lambda d: str(d.digest))
