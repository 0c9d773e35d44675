"""Scrub: hash every stored blob again and report (or quarantine) those that do not match."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from registry.services import paths, walk
from registry.storage.driver import PathNotFound, StorageDriver


@dataclass
class ScrubReport:
    blobs_checked: int = 0
    bytes_checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


async def scrub(
    driver: StorageDriver,
    quarantine: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> ScrubReport:
    """Re-hash every blob; with ``quarantine`` move bad ones to ``_quarantine`` (unservable)."""
    report = ScrubReport()
    stored = [blob async for blob in walk.blobs(driver)]
    for done, blob in enumerate(stored, 1):
        hasher = hashlib.new(blob.digest.algorithm)
        try:
            async for chunk in driver.read(paths.blob_data(blob.digest)):
                await asyncio.to_thread(hasher.update, chunk)
                report.bytes_checked += len(chunk)
        except PathNotFound:  # collected meanwhile
            continue
        report.blobs_checked += 1
        if hasher.hexdigest() != blob.digest.hex:
            report.corrupt.append(str(blob.digest))
            if quarantine:
                await driver.move(paths.blob_data(blob.digest), paths.quarantine(blob.digest))
                await walk.delete_quietly(driver, paths.blob_directory(blob.digest))
                report.quarantined.append(str(blob.digest))
        if progress is not None:
            progress("scrub", done, len(stored))
    return report
