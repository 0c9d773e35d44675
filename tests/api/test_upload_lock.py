"""One upload session, several requests at once: one writes, the others get 416, no corruption."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from registry.oci.errors import ErrorCode, RegistryError
from registry.services import RegistryServices, paths
from tests.helpers import assert_error, sha256

pytestmark = pytest.mark.anyio


def services_of(app: FastAPI) -> RegistryServices:
    services: RegistryServices = app.state.services
    return services


async def test_patch_on_a_busy_session_gets_416_and_writes_nothing(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    location = (await client.post("/v2/lock/blobs/uploads/")).headers["location"]
    first = await client.patch(location, content=b"abc", headers={"Content-Range": "0-2"})
    assert first.status_code == 202
    upload_id = location.rsplit("/", 1)[1]
    driver = services_of(app).driver
    holder = await driver.writer(paths.upload_data("lock", upload_id), 3)  # a request in flight
    try:
        busy = await client.patch(location, content=b"def", headers={"Content-Range": "3-5"})
        assert_error(busy, 416, "RANGE_INVALID")
        assert busy.headers["range"] == "0-2" and busy.headers["location"] == location
        assert_error(
            await client.put(location, params={"digest": sha256(b"abc")}), 416, "RANGE_INVALID"
        )
        assert_error(await client.delete(location), 416, "RANGE_INVALID")
        status = await client.get(location)  # reading the session never waits
        assert status.status_code == 204 and status.headers["range"] == "0-2"
    finally:
        await holder.cancel()
    done = await client.put(
        location,
        params={"digest": sha256(b"abcdef")},
        content=b"def",
        headers={"Content-Range": "3-5"},
    )
    assert done.status_code == 201, done.text
    blob = await client.get(f"/v2/lock/blobs/{sha256(b'abcdef')}")
    assert blob.content == b"abcdef"


async def test_racing_patches_one_wins_the_other_is_refused(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/race/blobs/uploads/")).headers["location"]
    first_in = asyncio.Event()

    async def slow_body(data: bytes) -> AsyncIterator[bytes]:
        yield data[:10]
        first_in.set()
        await asyncio.sleep(0.3)
        yield data[10:]

    one, two = os.urandom(4000), os.urandom(4000)

    async def second() -> httpx.Response:
        await first_in.wait()
        return await client.patch(location, content=two, headers={"Content-Range": "0-3999"})

    slow, fast = await asyncio.gather(
        client.patch(location, content=slow_body(one), headers={"Content-Range": "0-3999"}),
        second(),
    )
    assert slow.status_code == 202, slow.text
    assert_error(fast, 416, "RANGE_INVALID")
    # The loser may retry from the offset it is told: its chunk is stale now.
    stale = await client.patch(location, content=two, headers={"Content-Range": "0-3999"})
    assert_error(stale, 416, "RANGE_INVALID")
    assert stale.headers["range"] == "0-3999"
    done = await client.put(location, params={"digest": sha256(one)})
    assert done.status_code == 201, done.text


async def test_request_that_lost_the_race_never_truncates_the_winner(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """A request that read the session before another one advanced it gets 416 under the lock."""
    uploads = services_of(app).uploads
    location = (await client.post("/v2/late/blobs/uploads/")).headers["location"]
    upload_id = location.rsplit("/", 1)[1]
    before = await uploads.get("late", upload_id)  # the late request reads offset 0 ...
    assert (await client.patch(location, content=b"winner")).status_code == 202
    with pytest.raises(RegistryError) as caught:  # ... then tries to write at 0
        await uploads.append(before, _body(b"loser!"))
    assert caught.value.status == 416 and caught.value.code is ErrorCode.RANGE_INVALID
    done = await client.put(location, params={"digest": sha256(b"winner")})
    assert done.status_code == 201, done.text


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_upload_finished_during_a_request_is_unknown(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    uploads = services_of(app).uploads
    location = (await client.post("/v2/gone/blobs/uploads/")).headers["location"]
    assert (await client.patch(location, content=b"data")).status_code == 202
    upload = await uploads.get("gone", location.rsplit("/", 1)[1])
    assert (await client.put(location, params={"digest": sha256(b"data")})).status_code == 201
    with pytest.raises(RegistryError) as caught:
        await uploads.append(upload, _body(b"more"))
    assert caught.value.code is ErrorCode.BLOB_UPLOAD_UNKNOWN
    assert_error(await client.patch(location, content=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
