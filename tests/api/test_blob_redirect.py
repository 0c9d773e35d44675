"""With ``REGISTRY_STORAGE__S3__REDIRECT`` a blob GET answers 307 to a pre-signed URL."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from config import Settings, StorageSettings
from registry.app import create_app
from tests.conftest import PASSWORD, USER
from tests.helpers import push_blob, sha256
from tests.s3 import S3Endpoint

pytestmark = pytest.mark.anyio


@pytest.fixture
async def redirecting(s3: S3Endpoint) -> AsyncIterator[httpx.AsyncClient]:
    storage = StorageSettings(backend="s3", s3=s3.settings(redirect=True, redirect_ttl=60))
    app = create_app(Settings(username=USER, password=PASSWORD, storage=storage, _env_file=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://registry.test", auth=(USER, PASSWORD)
    ) as client:
        yield client
    await app.state.services.driver.close()


async def test_blob_get_redirects_to_the_bucket(redirecting: httpx.AsyncClient) -> None:
    data = os.urandom(70_000)
    digest = await push_blob(redirecting, "r/app", data)
    response = await redirecting.get(f"/v2/r/app/blobs/{digest}")
    assert response.status_code == 307
    assert response.headers["docker-content-digest"] == digest
    url = response.headers["location"]
    assert "X-Amz-Signature=" in url and "Expires=60" in url
    async with httpx.AsyncClient() as direct:  # bytes come from the bucket, not the registry
        assert sha256((await direct.get(url)).content) == digest
    ranged = await redirecting.get(f"/v2/r/app/blobs/{digest}", headers={"Range": "bytes=5-9"})
    assert ranged.status_code == 206 and ranged.content == data[5:10]
    head = await redirecting.head(f"/v2/r/app/blobs/{digest}")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))


async def test_finishing_an_upload_never_reads_its_bytes_back(
    s3: S3Endpoint, redirecting: httpx.AsyncClient
) -> None:
    """PATCH, PATCH (continued server-side), PUT (server-side copy): no GET of the data."""
    data = os.urandom(13 * 1024 * 1024)
    location = (await redirecting.post("/v2/r/big/blobs/uploads/")).headers["location"]
    upload_id = location.rsplit("/", 1)[1]
    for start, end in ((0, 6 * 1024 * 1024), (6 * 1024 * 1024, 11 * 1024 * 1024)):
        patched = await redirecting.patch(
            location, content=data[start:end], headers={"Content-Range": f"{start}-{end - 1}"}
        )
        assert patched.status_code == 202, patched.text
    done = await redirecting.put(
        location, params={"digest": sha256(data)}, content=data[11 * 1024 * 1024 :]
    )
    assert done.status_code == 201, done.text
    requests = [line for line in s3.log.read_text().splitlines() if upload_id in line]
    assert any('"PUT ' in line and "uploadId=" in line for line in requests), requests
    data_reads = [line for line in requests if re.search(r'"GET \S*/_uploads/\S+/data[ ?]', line)]
    assert not data_reads, data_reads  # listings (stat of a missing key) are not reads
