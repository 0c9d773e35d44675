"""Online garbage collection: mark what is reachable, sweep the rest, while pushes go on.

Mark, per repository: the manifests its tags point at (every revision, unless untagged ones
are to go), the children of kept indexes, the referrers of kept manifests, and every revision
written within the grace window; then the blobs those manifests reference, and the manifests'
own bytes. Sweep: blobs nothing keeps, repository links to them, untagged (or orphaned)
revisions, and expired upload sessions. Anything written, linked or pulled within the grace
window (default one hour) is never swept, whatever references it.

A manifest PUT racing the sweep either keeps its blobs or fails cleanly, never leaves a
manifest pointing at a deleted blob. Before deleting anything the collector writes a
tombstone for each victim, then looks again at every revision written since it started
(and at the victims' links): whatever those reference is spared. A manifest PUT writes its
revision first, then looks for tombstones on what it references, then checks once more that
all of it exists; on a tombstone or a gap it takes its revision back and answers
``MANIFEST_BLOB_UNKNOWN``. A collection either re-checks after the revision was written (and
spares its parts), or its tombstones or its deletions are seen (docs/gc.md has the argument).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial

from registry.oci.digest import Digest
from registry.oci.errors import RegistryError
from registry.oci.manifest import parse_manifest, stored_media_type
from registry.services import paths, walk
from registry.services.uploads import UploadService
from registry.storage.driver import PathBusy, PathNotFound, StorageDriver

log = logging.getLogger("registry.gc")
Progress = Callable[[str, int, int], None]
DEFAULT_GRACE = 3600.0
CLOCK_SLACK = 2.0  # seconds: a write this close to the start counts as "during the run"


class CollectionBusy(Exception):
    """Another collection holds the lock."""


@dataclass
class GCReport:
    """What a collection found and did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    repositories: int = 0
    manifests_kept: int = 0
    manifests_removed: int = 0
    blobs_kept: int = 0
    blobs_removed: int = 0
    bytes_freed: int = 0
    links_removed: int = 0
    uploads_purged: int = 0
    spared_by_recheck: int = 0
    seconds: float = 0.0
    removed_blobs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Manifest:
    """What marking learnt about one stored revision."""

    blobs: set[Digest] = field(default_factory=set)
    children: set[Digest] = field(default_factory=set)
    subject: Digest | None = None
    readable: bool = True


@dataclass
class _Repository:
    name: str
    revisions: dict[Digest, float] = field(default_factory=dict)
    layer_links: dict[Digest, float] = field(default_factory=dict)
    kept: set[Digest] = field(default_factory=set)
    live_blobs: set[Digest] = field(default_factory=set)
    doomed_revisions: dict[Digest, Digest | None] = field(default_factory=dict)  # -> subject
    doomed_links: set[Digest] = field(default_factory=set)


class GarbageCollector:
    """One mark-and-sweep pass over a driver; safe while the registry serves requests."""

    def __init__(
        self,
        driver: StorageDriver,
        *,
        grace: float = DEFAULT_GRACE,
        delete_untagged: bool = False,
        upload_max_age: float | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.driver = driver
        self.grace = grace
        self.delete_untagged = delete_untagged
        self.upload_max_age = upload_max_age
        self.dry_run = dry_run
        self.progress = progress or (lambda phase, done, total: None)
        self.clock = clock
        self._manifests: dict[Digest, _Manifest] = {}

    async def run(self) -> GCReport:
        """Collect once; ``CollectionBusy`` if another collection is running."""
        began = time.monotonic()
        try:
            lock = await self.driver.writer(paths.gc_lock(), 0)
        except PathBusy:
            raise CollectionBusy("another garbage collection is running") from None
        try:
            report = await self._collect()
        finally:
            if not self.dry_run:
                await walk.delete_quietly(self.driver, paths.TOMBSTONES)
            await lock.cancel()
        report.seconds = round(time.monotonic() - began, 3)
        return report

    async def _collect(self) -> GCReport:
        report = GCReport(dry_run=self.dry_run)
        if not self.dry_run:  # tombstones a crashed run left behind
            await walk.delete_quietly(self.driver, paths.TOMBSTONES)
        began = time.time()  # real time, for the re-check: storage stamps writes with it
        started = self.clock()  # the policy clock (ages, grace), replaceable in tests
        cutoff = started - self.grace
        if self.upload_max_age is not None:
            report.uploads_purged = await UploadService.expire(
                self.driver, self.upload_max_age, started, dry_run=self.dry_run
            )
        names = await walk.repositories(self.driver)
        report.repositories = len(names)
        repositories: list[_Repository] = []
        for done, name in enumerate(names, 1):
            repositories.append(await self._mark(name, cutoff))
            self.progress("mark", done, len(names))
        live = set().union(*(r.live_blobs for r in repositories))
        recently_linked = {
            d for r in repositories for d, modified in r.layer_links.items() if modified >= cutoff
        }
        doomed: dict[Digest, int] = {}
        stored_blobs = 0
        protected = live | recently_linked
        async for blob in walk.blobs(self.driver):
            stored_blobs += 1
            if blob.digest not in protected and blob.modified < cutoff:
                doomed[blob.digest] = blob.size
        self.progress("scan", 1, 1)
        for repository in repositories:
            repository.doomed_links = {
                d
                for d, modified in repository.layer_links.items()
                if modified < cutoff and (d not in repository.live_blobs or d in doomed)
            }
        if not self.dry_run:
            await self._write_tombstones(repositories, doomed)
            report.spared_by_recheck = await self._recheck(repositories, doomed, began, started)
            await self._sweep(repositories, doomed, report)
        else:
            report.manifests_removed = sum(len(r.doomed_revisions) for r in repositories)
            report.blobs_removed = len(doomed)
            report.bytes_freed = sum(doomed.values())
            report.links_removed = sum(len(r.doomed_links) for r in repositories)
            report.removed_blobs = sorted(str(d) for d in doomed)
        report.manifests_kept = sum(len(r.kept) for r in repositories)
        report.blobs_kept = stored_blobs - report.blobs_removed
        return report

    async def _describe(self, digest: Digest) -> _Manifest:
        """Read a manifest's references once (manifests are shared across repositories)."""
        known = self._manifests.get(digest)
        if known is not None:
            return known
        try:
            raw = await self.driver.get_content(paths.blob_data(digest))
        except PathNotFound:
            described = _Manifest(readable=False)
        else:
            try:
                manifest = parse_manifest(raw, stored_media_type(raw))
                described = _Manifest(
                    {d.digest for d in manifest.blobs},
                    {d.digest for d in manifest.manifests},
                    manifest.subject.digest if manifest.subject else None,
                )
            except RegistryError:  # not a manifest we understand: keep it, follow nothing
                described = _Manifest()
        self._manifests[digest] = described
        return described

    async def _closure(self, name: str, roots: set[Digest], revisions: set[Digest]) -> set[Digest]:
        """The revisions reachable from ``roots``: children and referrers, recursively."""
        kept: set[Digest] = set()
        pending = [r for r in roots if r in revisions]
        while pending:
            digest = pending.pop()
            if digest in kept:
                continue
            kept.add(digest)
            described = await self._describe(digest)
            referrers = await walk.digests_under(self.driver, paths.referrers(name, digest))
            pending.extend(d for d in (*described.children, *referrers) if d in revisions)
        return kept

    async def _mark(self, name: str, cutoff: float) -> _Repository:
        repository = _Repository(name)
        revision_links = await walk.links(self.driver, paths.revisions(name))
        repository.revisions = {link.digest: link.modified for link in revision_links}
        repository.layer_links = {
            link.digest: link.modified for link in await walk.links(self.driver, paths.layers(name))
        }
        tagged = set((await walk.tags(self.driver, name)).values())
        recent = {d for d, modified in repository.revisions.items() if modified >= cutoff}
        roots = (tagged | recent) if self.delete_untagged else set(repository.revisions)
        kept = await self._closure(name, roots, set(repository.revisions))
        for digest, modified in repository.revisions.items():
            described = await self._describe(digest)
            if not described.readable and modified < cutoff:
                kept.discard(digest)  # an orphaned revision: its manifest bytes are gone
            if digest not in kept:
                repository.doomed_revisions[digest] = described.subject
        repository.kept = kept
        for digest in kept:
            repository.live_blobs.add(digest)
            repository.live_blobs |= self._manifests[digest].blobs
        return repository

    async def _write_tombstones(
        self, repositories: list[_Repository], doomed: dict[Digest, int]
    ) -> None:
        marker = str(self.clock()).encode()
        writes = [
            *(paths.blob_tombstone(d) for d in doomed),
            *(
                paths.revision_tombstone(r.name, d)
                for r in repositories
                for d in r.doomed_revisions
            ),
            *(paths.layer_tombstone(r.name, d) for r in repositories for d in r.doomed_links),
        ]
        await walk.bounded([partial(self.driver.put_content, path, marker) for path in writes])

    async def _recheck(
        self,
        repositories: list[_Repository],
        doomed: dict[Digest, int],
        began: float,
        started: float,
    ) -> int:
        """Spare whatever was written or linked since the run began (tombstones are down).

        Revisions written since ``began`` (wall-clock time, as storage stamps writes) belong to
        manifest PUTs that may have missed the tombstones: whether a write happened during the
        run is a question of order, not of the grace policy. Links used again are an age
        question, measured on the policy clock (``started``) like the grace window.
        """
        since = began - CLOCK_SLACK
        used_since = started - CLOCK_SLACK
        spared = 0
        by_name = {r.name: r for r in repositories}
        for name in await walk.repositories(self.driver):
            repository = by_name.get(name) or _Repository(name)
            seen = set(repository.revisions)
            now = {
                link.digest: link.modified
                for link in await walk.links(self.driver, paths.revisions(name))
            }
            fresh = {d for d, modified in now.items() if modified >= since or d not in seen}
            rescued = await self._closure(name, fresh, set(now))
            for digest in rescued:
                if not self._manifests.get(digest, _Manifest()).readable:
                    self._manifests.pop(digest)  # its bytes were pushed again since
                described = await self._describe(digest)
                for blob in {digest, *described.blobs}:
                    if doomed.pop(blob, None) is not None:
                        spared += 1
                        await walk.delete_quietly(self.driver, paths.blob_tombstone(blob))
                    if blob in repository.doomed_links:
                        repository.doomed_links.discard(blob)
                        await walk.delete_quietly(self.driver, paths.layer_tombstone(name, blob))
                if digest in repository.doomed_revisions:
                    del repository.doomed_revisions[digest]
                    spared += 1
                    await walk.delete_quietly(self.driver, paths.revision_tombstone(name, digest))
            for digest in list(repository.doomed_links):  # linked (or pulled) again meanwhile
                info = await walk.stat_or_none(self.driver, paths.layer_link(name, digest))
                if info is not None and info.modified >= used_since:
                    repository.doomed_links.discard(digest)
                    if doomed.pop(digest, None) is not None:
                        spared += 1
                        await walk.delete_quietly(self.driver, paths.blob_tombstone(digest))
        return spared

    async def _sweep(
        self, repositories: list[_Repository], doomed: dict[Digest, int], report: GCReport
    ) -> None:
        total = sum(len(r.doomed_revisions) + len(r.doomed_links) for r in repositories)
        total += len(doomed)
        done = 0
        for repository in repositories:
            name = repository.name
            for digest, subject in repository.doomed_revisions.items():
                revision = paths.manifest_revision_link(name, digest).removesuffix("/link")
                if await walk.delete_quietly(self.driver, revision):
                    report.manifests_removed += 1
                if subject is not None:
                    link = paths.referrer_link(name, subject, digest).removesuffix("/link")
                    await walk.delete_quietly(self.driver, link)
                done += 1
                self.progress("sweep", done, total)
            for digest in repository.doomed_links:
                link = paths.layer_link(name, digest).removesuffix("/link")
                if await walk.delete_quietly(self.driver, link):
                    report.links_removed += 1
                done += 1
                self.progress("sweep", done, total)
        for digest, size in doomed.items():
            if await walk.delete_quietly(self.driver, paths.blob_directory(digest)):
                report.blobs_removed += 1
                report.bytes_freed += size
                report.removed_blobs.append(str(digest))
            done += 1
            self.progress("sweep", done, total)
        report.removed_blobs.sort()


async def tombstoned(driver: StorageDriver, candidates: list[str]) -> str | None:
    """The first of ``candidates`` (tombstone paths) that exists, if a collection is sweeping."""
    if await walk.stat_or_none(driver, paths.TOMBSTONES) is None:
        return None  # no collection is between its tombstones and its sweep
    found = await asyncio.gather(*(walk.stat_or_none(driver, path) for path in candidates))
    for path, info in zip(candidates, found, strict=True):
        if info is not None:
            return path
    return None
