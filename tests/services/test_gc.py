"""Garbage collection: what is kept, what goes, and pushes racing a collection."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from registry.oci.digest import Digest
from registry.services import RegistryServices, paths
from registry.services.gc import CLOCK_SLACK, CollectionBusy, GarbageCollector, GCReport
from registry.storage.driver import StorageDriver
from tests.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    descriptor,
    image_manifest,
    push_blob,
    push_image,
    sha256,
)

pytestmark = pytest.mark.anyio
LATER = 2 * 3600.0  # run the collector's clock this far ahead: everything is past its grace


def driver_of(app: FastAPI) -> StorageDriver:
    services: RegistryServices = app.state.services
    return services.driver


async def collect(app: FastAPI, ahead: float = LATER, **options: object) -> GCReport:
    collector = GarbageCollector(
        driver_of(app),
        clock=lambda: time.time() + ahead,
        **options,  # type: ignore[arg-type]
    )
    return await collector.run()


async def pulls_whole(client: httpx.AsyncClient, name: str, reference: str) -> None:
    manifest = await client.get(f"/v2/{name}/manifests/{reference}")
    assert manifest.status_code == 200, manifest.text
    document = json.loads(manifest.content)
    for child in document.get("manifests", []):
        await pulls_whole(client, name, child["digest"])
    for blob in [document.get("config"), *document.get("layers", [])]:
        if blob is None:
            continue
        response = await client.get(f"/v2/{name}/blobs/{blob['digest']}")
        assert response.status_code == 200, (blob, response.text)
        assert sha256(response.content) == blob["digest"]


async def test_unreferenced_blobs_go_tagged_images_stay(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await push_image(client, "keep/me", "v1", [b"layer-one", b"layer-two"])
    orphan = os.urandom(3000)
    orphan_digest = await push_blob(client, "keep/me", orphan)
    report = await collect(app)
    assert report.blobs_removed == 1 and report.bytes_freed == len(orphan)
    assert report.removed_blobs == [orphan_digest]
    assert report.links_removed == 1 and report.manifests_removed == 0
    assert report.manifests_kept == 1 and report.blobs_kept == 4  # config, 2 layers, manifest
    await pulls_whole(client, "keep/me", "v1")
    assert_error(await client.get(f"/v2/keep/me/blobs/{orphan_digest}"), 404, "BLOB_UNKNOWN")


async def test_nothing_within_the_grace_window_is_collected(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    orphan_digest = await push_blob(client, "young", b"just pushed")
    report = await collect(app, ahead=0)
    assert report.blobs_removed == 0 and report.links_removed == 0
    assert (await client.head(f"/v2/young/blobs/{orphan_digest}")).status_code == 200


async def test_dry_run_reports_and_deletes_nothing(client: httpx.AsyncClient, app: FastAPI) -> None:
    orphan_digest = await push_blob(client, "dry", b"unreferenced")
    report = await collect(app, dry_run=True)
    assert report.dry_run and report.blobs_removed == 1 and report.removed_blobs == [orphan_digest]
    assert (await client.head(f"/v2/dry/blobs/{orphan_digest}")).status_code == 200
    assert (await collect(app)).blobs_removed == 1


async def test_untagged_manifests_stay_unless_asked(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    old_digest, _ = await push_image(client, "tags", "v1", [b"old-layer"])
    await push_image(client, "tags", "v1", [b"new-layer"])  # v1 moves: the old one is untagged
    await asyncio.sleep(CLOCK_SLACK)  # revisions written just before a run count as in flight
    report = await collect(app)
    assert report.manifests_removed == 0 and report.blobs_removed == 0
    assert (await client.get(f"/v2/tags/manifests/{old_digest}")).status_code == 200
    report = await collect(app, delete_untagged=True)
    assert report.manifests_removed == 1
    assert report.blobs_removed == 2  # its manifest bytes and its layer (the config is shared)
    assert_error(await client.get(f"/v2/tags/manifests/{old_digest}"), 404, "MANIFEST_UNKNOWN")
    await pulls_whole(client, "tags", "v1")


async def test_index_children_and_referrers_of_kept_manifests_stay(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    amd, amd_raw = await push_image(client, "multi", amd_tag := "amd", [b"amd-layer"])
    arm, arm_raw = await push_image(client, "multi", "arm", [b"arm-layer"])
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(amd_raw, OCI_MANIFEST), descriptor(arm_raw, OCI_MANIFEST)],
        }
    ).encode()
    put = await client.put(
        "/v2/multi/manifests/latest", content=index, headers={"Content-Type": OCI_INDEX}
    )
    assert put.status_code == 201
    for tag in (amd_tag, "arm"):  # the children lose their own tags
        assert (await client.delete(f"/v2/multi/manifests/{tag}")).status_code == 202
    config = await push_blob(client, "multi", b"{}")
    signature = image_manifest(
        b"{}", [], subject=descriptor(index, OCI_INDEX), artifactType="application/x-sig"
    )
    assert config
    put = await client.put(
        f"/v2/multi/manifests/{sha256(signature)}",
        content=signature,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert put.status_code == 201, put.text
    report = await collect(app, delete_untagged=True)
    assert report.manifests_removed == 0 and report.blobs_removed == 0
    assert report.manifests_kept == 4
    await pulls_whole(client, "multi", "latest")
    await pulls_whole(client, "multi", sha256(signature))
    assert amd and arm


async def test_orphaned_revision_and_expired_upload_are_swept(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    digest, _ = await push_image(client, "orphan", "v1", [b"x"])
    driver = driver_of(app)
    await driver.delete(paths.blob_directory(Digest.parse(digest)))  # lost manifest bytes
    idle = await client.post("/v2/orphan/blobs/uploads/")
    assert (await client.patch(idle.headers["location"], content=b"partial")).status_code == 202
    await asyncio.sleep(CLOCK_SLACK)  # older than a run's in-flight window
    report = await collect(app, upload_max_age=3600)
    assert report.manifests_removed == 1 and report.uploads_purged == 1
    assert_error(await client.get(idle.headers["location"]), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_an_index_is_refused_for_a_child_whose_bytes_are_gone(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """A revision link left without its manifest bytes (a sweep racing a re-push) is no child."""
    child, child_raw = await push_image(client, "orphan-child", "v1", [b"child layer"])
    await driver_of(app).delete(paths.blob_directory(Digest.parse(child)))
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(child_raw, OCI_MANIFEST)],
        }
    ).encode()
    response = await client.put(
        "/v2/orphan-child/manifests/all", content=index, headers={"Content-Type": OCI_INDEX}
    )
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")


async def test_only_one_collection_at_a_time(app: FastAPI) -> None:
    lock = await driver_of(app).writer(paths.gc_lock(), 0)
    try:
        with pytest.raises(CollectionBusy):
            await collect(app)
    finally:
        await lock.cancel()
    await collect(app)


async def test_manifest_put_against_a_tombstoned_blob_fails_cleanly(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """The push side of the protocol: a tombstone seen after writing the revision."""
    layer_digest = await push_blob(client, "race", b"doomed layer")
    config_digest = await push_blob(client, "race", b"{}")
    assert config_digest
    driver = driver_of(app)
    await driver.put_content(paths.blob_tombstone(Digest.parse(layer_digest)), b"gc")
    raw = image_manifest(b"{}", [b"doomed layer"])
    response = await client.put(
        "/v2/race/manifests/v1", content=raw, headers={"Content-Type": OCI_MANIFEST}
    )
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")
    assert_error(await client.get(f"/v2/race/manifests/{sha256(raw)}"), 404, "MANIFEST_UNKNOWN")
    assert_error(await client.get("/v2/race/manifests/v1"), 404, "MANIFEST_UNKNOWN")


async def test_a_whole_collection_between_reference_check_and_revision_write(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collection sweeps and drops its tombstones while the PUT is between its steps.

    The PUT saw its blobs, then a collection ran from mark to the end (no tombstones left);
    only then the PUT wrote its revision. It must not answer 201 for blobs that are gone.
    """
    await push_blob(client, "race3", b"swept layer")
    await push_blob(client, "race3", b'{"n":3}')
    manifests = app.state.services.manifests
    missing_reference = manifests._missing_reference
    reports: list[GCReport] = []

    async def check_then_collect(*args: Any) -> Digest | None:
        missing: Digest | None = await missing_reference(*args)
        if not reports:  # the first check, before the revision is written
            reports.append(await collect(app))
        return missing

    monkeypatch.setattr(manifests, "_missing_reference", check_then_collect)
    raw = image_manifest(b'{"n":3}', [b"swept layer"])
    response = await client.put(
        "/v2/race3/manifests/v1", content=raw, headers={"Content-Type": OCI_MANIFEST}
    )
    assert reports[0].blobs_removed == 2
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")
    assert_error(await client.get(f"/v2/race3/manifests/{sha256(raw)}"), 404, "MANIFEST_UNKNOWN")
    assert_error(await client.get("/v2/race3/manifests/v1"), 404, "MANIFEST_UNKNOWN")


class PushDuringSweep(GarbageCollector):
    """A collector that lets a client push just before, or just after, its tombstones."""

    def __init__(
        self, driver: StorageDriver, push: Callable[[], Awaitable[None]], after: bool
    ) -> None:
        super().__init__(driver, clock=lambda: time.time() + LATER)
        self.push = push
        self.after = after

    async def _write_tombstones(self, *args: Any) -> None:
        if not self.after:
            await self.push()
        await super()._write_tombstones(*args)
        if self.after:
            await self.push()


@pytest.mark.parametrize("after_tombstones", [False, True])
async def test_push_between_mark_and_sweep(
    client: httpx.AsyncClient, app: FastAPI, after_tombstones: bool
) -> None:
    """Marked as garbage, then a manifest referencing the blobs arrives mid-collection.

    Before the tombstones: the collector's re-check sees the new revision and spares the
    blobs (201, pulls whole). After them: the push sees a tombstone and is refused cleanly.
    """
    await push_blob(client, "race2", b"old layer")
    await push_blob(client, "race2", b'{"n":1}')
    outcome: list[httpx.Response] = []

    async def push() -> None:
        raw = image_manifest(b'{"n":1}', [b"old layer"])
        outcome.append(
            await client.put(
                "/v2/race2/manifests/v1", content=raw, headers={"Content-Type": OCI_MANIFEST}
            )
        )

    report = await PushDuringSweep(driver_of(app), push, after_tombstones).run()
    (response,) = outcome
    if not after_tombstones:
        assert response.status_code == 201, response.text
        assert report.blobs_removed == 0 and report.spared_by_recheck == 2
        await pulls_whole(client, "race2", "v1")
    else:
        assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")
        assert report.blobs_removed == 2
        assert_error(await client.get("/v2/race2/manifests/v1"), 404, "MANIFEST_UNKNOWN")


async def push_or_refused(
    client: httpx.AsyncClient, name: str, tag: str, layers: list[bytes]
) -> bool:
    """Push an image; False if the manifest was refused because its blobs were collected."""
    config = json.dumps({"tag": tag}).encode()
    for blob in [config, *layers]:
        await push_blob(client, name, blob)
    response = await client.put(
        f"/v2/{name}/manifests/{tag}",
        content=image_manifest(config, layers),
        headers={"Content-Type": OCI_MANIFEST},
    )
    if response.status_code == 201:
        return True
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")
    return False


@pytest.mark.parametrize("ahead", [0.0, LATER])
async def test_gc_concurrent_with_a_push_loop_everything_pulls_whole(
    client: httpx.AsyncClient, app: FastAPI, ahead: float
) -> None:
    """Collections while images are pushed; every acknowledged image pulls whole.

    With the real clock the grace window protects every push in flight, so all succeed.
    With the collector's clock two hours ahead nothing is protected by age: a manifest may
    then be refused (MANIFEST_BLOB_UNKNOWN, its blobs collected under it), but none is ever
    accepted with a blob missing.
    """
    images, tries = (8, 1) if ahead == 0 else (4, 3)
    acknowledged: list[tuple[str, str]] = []
    refused = 0
    stop = asyncio.Event()
    runs = 0

    async def pusher() -> None:
        nonlocal refused
        try:
            for i in range(images):
                name, tag = f"loop/r{i % 3}", f"t{i}"
                layers = [b"shared base layer", os.urandom(500)]  # old blobs re-used
                for _ in range(tries):
                    if await push_or_refused(client, name, tag, layers):
                        acknowledged.append((name, tag))
                        break
                    refused += 1
                await asyncio.sleep(0)
        finally:
            stop.set()

    async def collector() -> None:
        nonlocal runs
        for _ in range(500):  # bounded; between runs a push has time to finish
            if stop.is_set():
                break
            await collect(app, ahead=ahead, delete_untagged=True)
            runs += 1
            await asyncio.sleep(0.03)

    await asyncio.gather(pusher(), collector())
    await collect(app, ahead=ahead, delete_untagged=True)
    assert runs >= 2 and len(acknowledged) + refused >= images
    if ahead == 0:
        assert refused == 0 and len(acknowledged) == images
    for name, tag in acknowledged:
        await pulls_whole(client, name, tag)
