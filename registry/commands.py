"""Maintenance commands: ``python -m registry gc`` and ``python -m registry scrub``.

Both work on the storage the settings describe and are safe while the registry serves
requests. On a terminal they draw a progress bar on stderr; they end with a summary (or
JSON with ``--json``) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TextIO

from config import Settings
from registry.app import create_driver
from registry.services.gc import CollectionBusy, GarbageCollector, GCReport
from registry.services.scrub import ScrubReport, scrub


class ProgressBar:
    """A one-line bar on a terminal; silent when the stream is not one."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.enabled = stream.isatty()
        self.drawn = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        filled = self.width * done // total
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{phase:<6} [{bar}] {done}/{total}")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{count} B"


def gc_summary(report: GCReport) -> str:
    verb = "would remove" if report.dry_run else "removed"
    return "\n".join(
        (
            f"garbage collection{' (dry run)' if report.dry_run else ''}: "
            f"{report.repositories} repositories in {report.seconds:.1f} s",
            f"  manifests: {report.manifests_kept} kept, {verb} {report.manifests_removed}",
            f"  blobs:     {report.blobs_kept} kept, {verb} {report.blobs_removed} "
            f"({_size(report.bytes_freed)} freed)",
            f"  links:     {verb} {report.links_removed}",
            f"  uploads:   {verb} {report.uploads_purged} expired sessions",
            f"  spared by the final re-check (pushed during the run): {report.spared_by_recheck}",
        )
    )


def scrub_summary(report: ScrubReport) -> str:
    lines = [
        f"scrub: {report.blobs_checked} blobs, {_size(report.bytes_checked)} checked, "
        f"{len(report.corrupt)} corrupt"
    ]
    for digest in report.corrupt:
        moved = " (quarantined)" if digest in report.quarantined else ""
        lines.append(f"  CORRUPT {digest}{moved}")
    return "\n".join(lines)


def run_gc(settings: Settings, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m registry gc", description="Remove what no tag (or recent push) keeps."
    )
    parser.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    parser.add_argument(
        "--delete-untagged", action="store_true", help="also remove manifests no tag reaches"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--grace",
        type=float,
        default=settings.gc.grace_seconds,
        metavar="SECONDS",
        help="keep anything younger than this (default: REGISTRY_GC__GRACE_SECONDS, 3600)",
    )
    args = parser.parse_args(argv)
    bar = ProgressBar()
    collector = GarbageCollector(
        create_driver(settings),
        grace=args.grace,
        delete_untagged=args.delete_untagged,
        upload_max_age=settings.gc.upload_max_age_seconds,
        dry_run=args.dry_run,
        progress=bar,
    )
    try:
        report = asyncio.run(collector.run())
    except CollectionBusy as error:
        bar.close()
        print(f"registry gc: {error}", file=sys.stderr)
        return 3
    bar.close()
    print(json.dumps(report.as_dict(), indent=2) if args.json else gc_summary(report))
    return 0


def run_scrub(settings: Settings, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m registry scrub", description="Hash every blob again; report mismatches."
    )
    parser.add_argument(
        "--quarantine", action="store_true", help="move corrupt blobs aside (_quarantine/)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    bar = ProgressBar()
    report = asyncio.run(scrub(create_driver(settings), args.quarantine, bar))
    bar.close()
    print(json.dumps(report.as_dict(), indent=2) if args.json else scrub_summary(report))
    return 1 if report.corrupt else 0
