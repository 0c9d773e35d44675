"""Monolithic, chunked, streamed and resumable uploads; mount; cancel; digest checks."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from config import Settings
from registry.app import create_app
from registry.oci.digest import ResumableHasher
from registry.storage.driver import PathNotFound, StorageDriver
from tests.conftest import PASSWORD, USER
from tests.helpers import assert_error, push_blob, sha256

pytestmark = pytest.mark.anyio


async def test_post_starts_a_session(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/a/b/blobs/uploads/")
    assert response.status_code == 202
    location = response.headers["location"]
    assert location.startswith("/v2/a/b/blobs/uploads/")
    assert location.endswith(response.headers["docker-upload-uuid"])
    assert response.headers["range"] == "0-0"
    status = await client.get(location)
    assert status.status_code == 204
    assert status.headers["range"] == "0-0"


async def test_monolithic_post_with_digest(client: httpx.AsyncClient) -> None:
    data = os.urandom(5000)
    digest = sha256(data)
    response = await client.post("/v2/mono/blobs/uploads/", params={"digest": digest}, content=data)
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/mono/blobs/{digest}"
    assert response.headers["docker-content-digest"] == digest
    assert (await client.get(f"/v2/mono/blobs/{digest}")).content == data


async def test_chunked_upload_with_content_range(client: httpx.AsyncClient) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    location = (await client.post("/v2/c/blobs/uploads/")).headers["location"]
    chunk = 1024 * 1024
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        response = await client.patch(
            location,
            content=piece,
            headers={
                "Content-Range": f"{start}-{start + len(piece) - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert response.status_code == 202, response.text
        assert response.headers["range"] == f"0-{start + len(piece) - 1}"
        location = response.headers["location"]
    digest = sha256(data)
    done = await client.put(location, params={"digest": digest})
    assert done.status_code == 201
    assert (await client.get(f"/v2/c/blobs/{digest}")).content == data


async def test_streamed_patch_then_put_with_last_chunk(client: httpx.AsyncClient) -> None:
    data = os.urandom(200_000)

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, 150_000, 7000):
            yield data[i : min(i + 7000, 150_000)]

    location = (await client.post("/v2/s/blobs/uploads/")).headers["location"]
    response = await client.patch(location, content=stream())  # chunked transfer encoding
    assert response.headers["range"] == "0-149999"
    digest = sha256(data)
    done = await client.put(location, params={"digest": digest}, content=data[150_000:])
    assert done.status_code == 201
    assert (await client.get(f"/v2/s/blobs/{digest}")).content == data


async def test_out_of_order_chunk_is_416(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/o/blobs/uploads/")).headers["location"]
    await client.patch(location, content=b"abcd", headers={"Content-Range": "0-3"})
    response = await client.patch(location, content=b"ef", headers={"Content-Range": "10-11"})
    assert_error(response, 416, "RANGE_INVALID")
    assert response.headers["range"] == "0-3"
    # the session is intact and continues where it was
    response = await client.patch(location, content=b"ef", headers={"Content-Range": "4-5"})
    assert response.status_code == 202
    done = await client.put(location, params={"digest": sha256(b"abcdef")})
    assert done.status_code == 201


async def test_digest_mismatch_publishes_nothing(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/m/blobs/uploads/")).headers["location"]
    claimed = sha256(b"something else")
    response = await client.put(location, params={"digest": claimed}, content=b"actual bytes")
    assert_error(response, 400, "DIGEST_INVALID")
    assert_error(await client.get(f"/v2/m/blobs/{claimed}"), 404, "BLOB_UNKNOWN")
    assert_error(await client.get(f"/v2/m/blobs/{sha256(b'actual bytes')}"), 404, "BLOB_UNKNOWN")
    assert_error(await client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_put_without_digest_is_400(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/m/blobs/uploads/")).headers["location"]
    assert_error(await client.put(location, content=b"x"), 400, "DIGEST_INVALID")


async def test_empty_blob(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "e", b"")
    response = await client.get(f"/v2/e/blobs/{digest}")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == "0"


async def test_cancel_upload(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/x/blobs/uploads/")).headers["location"]
    assert (await client.delete(location)).status_code == 204
    assert_error(await client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await client.patch(location, content=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize(
    "upload_id", ["nope", "..", "%2e%2e", "a" * 100, "01J0000000000000000000000!"]
)
async def test_unknown_or_malformed_upload_id(client: httpx.AsyncClient, upload_id: str) -> None:
    response = await client.get(f"/v2/x/blobs/uploads/{upload_id}")
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] in {"BLOB_UPLOAD_UNKNOWN", "NOT_FOUND"}


async def test_session_belongs_to_its_repository(client: httpx.AsyncClient) -> None:
    upload_id = (await client.post("/v2/one/blobs/uploads/")).headers["docker-upload-uuid"]
    assert_error(await client.get(f"/v2/two/blobs/uploads/{upload_id}"), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_cross_repository_mount(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "source/repo", b"shared layer")
    response = await client.post(
        "/v2/target/repo/blobs/uploads/", params={"mount": digest, "from": "source/repo"}
    )
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/target/repo/blobs/{digest}"
    assert (await client.get(f"/v2/target/repo/blobs/{digest}")).content == b"shared layer"


async def test_mount_of_missing_blob_opens_a_session(client: httpx.AsyncClient) -> None:
    missing = sha256(b"not there")
    response = await client.post(
        "/v2/target/blobs/uploads/", params={"mount": missing, "from": "source"}
    )
    assert response.status_code == 202
    assert "/blobs/uploads/" in response.headers["location"]


async def test_sha512_upload(client: httpx.AsyncClient) -> None:
    data = os.urandom(1000)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    start = await client.post("/v2/x/blobs/uploads/", params={"digest-algorithm": "sha512"})
    await client.patch(start.headers["location"], content=data)
    done = await client.put(start.headers["location"], params={"digest": digest})
    assert done.status_code == 201
    assert (await client.get(f"/v2/x/blobs/{digest}")).content == data


async def children(driver: StorageDriver, path: str) -> list[str]:
    """A folder's entries; none when it is gone (object stores keep no empty folders)."""
    try:
        return await driver.list(path)
    except PathNotFound:
        return []


async def test_upload_resumes_on_another_app_over_the_same_storage(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    """A session lives in storage: a second process (app) continues and finishes it."""
    data = os.urandom(300_000)
    location = (await client.post("/v2/multi/blobs/uploads/")).headers["location"]
    await client.patch(location, content=data[:100_000])
    other: FastAPI = create_app(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=other), base_url="http://b", auth=(USER, PASSWORD)
    ) as second:
        response = await second.patch(location, content=data[100_000:200_000])
        assert response.headers["range"] == "0-199999"
    await other.state.services.driver.close()
    done = await client.put(location, params={"digest": sha256(data)}, content=data[200_000:])
    assert done.status_code == 201
    driver = app.state.services.driver
    assert await children(driver, "docker/registry/v2/repositories/multi/_uploads") == []


async def test_hash_state_is_saved_beside_the_session(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """After a PATCH the running hash sits beside the session, keyed by its offset; the state
    before it is removed after the answer."""
    location = (await client.post("/v2/h/blobs/uploads/")).headers["location"]
    upload_id = location.rsplit("/", 1)[1]
    await client.patch(location, content=b"x" * 1000)
    await client.patch(location, content=b"y" * 10)
    await app.state.services.uploads.settle()
    driver = app.state.services.driver
    states = f"docker/registry/v2/repositories/h/_uploads/{upload_id}/hashstates/sha256"
    assert await driver.list(states) == ["1010"]
    expected = ResumableHasher()
    expected.update(b"x" * 1000 + b"y" * 10)
    assert await driver.get_content(f"{states}/1010") == expected.state()
    done = await client.put(location, params={"digest": sha256(b"x" * 1000 + b"y" * 10)})
    assert done.status_code == 201


async def test_upload_of_stored_content_answers_before_its_bytes_are_removed(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pushing content the store holds already: 201 at once, the session's copy goes after."""
    data = os.urandom(200_000)
    await push_blob(client, "first", data)
    driver: StorageDriver = app.state.services.driver
    deleting = asyncio.Event()
    release = asyncio.Event()
    delete = driver.delete

    location = (await client.post("/v2/second/blobs/uploads/")).headers["location"]
    session = f"docker/registry/v2/repositories/second/_uploads/{location.rsplit('/', 1)[1]}"

    async def slow_delete(path: str) -> None:
        if path == session:
            deleting.set()
            await release.wait()
        await delete(path)

    monkeypatch.setattr(driver, "delete", slow_delete)
    # the answer must not wait for the removal (which waits for ``release``)
    answer = client.put(location, params={"digest": sha256(data)}, content=data)
    done = await asyncio.wait_for(answer, 10)
    assert done.status_code == 201, done.text
    await asyncio.wait_for(deleting.wait(), 10)  # the removal started, and waits
    assert (await client.get(f"/v2/second/blobs/{sha256(data)}")).content == data
    assert_error(await client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")  # hidden already
    uploads = "docker/registry/v2/repositories/second/_uploads"
    assert len(await children(driver, uploads)) == 1
    release.set()
    await app.state.services.uploads.settle()
    assert await children(driver, uploads) == []
