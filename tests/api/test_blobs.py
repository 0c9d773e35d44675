"""Blob HEAD/GET with Range, DELETE, and repository isolation."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.helpers import assert_error, push_blob, sha256

pytestmark = pytest.mark.anyio


async def test_head_and_get_blob(client: httpx.AsyncClient) -> None:
    data = os.urandom(100_000)
    digest = await push_blob(client, "team/app", data)
    head = await client.head(f"/v2/team/app/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["docker-content-digest"] == digest
    assert head.headers["etag"] == f'"{digest}"'
    assert head.headers["accept-ranges"] == "bytes"
    assert head.content == b""
    got = await client.get(f"/v2/team/app/blobs/{digest}")
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["docker-distribution-api-version"] == "registry/2.0"


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=10-", 10, 999),
        ("bytes=-5", 995, 999),
        ("bytes=990-5000", 990, 999),
    ],
)
async def test_range_requests(
    client: httpx.AsyncClient, header: str, first: int, last: int
) -> None:
    data = os.urandom(1000)
    digest = await push_blob(client, "r", data)
    response = await client.get(f"/v2/r/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == data[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/1000"
    assert response.headers["content-length"] == str(last - first + 1)


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=2000-3000", "bytes=5-2", "bytes=-0"])
async def test_unsatisfiable_range_is_416(client: httpx.AsyncClient, header: str) -> None:
    digest = await push_blob(client, "r", os.urandom(1000))
    response = await client.get(f"/v2/r/blobs/{digest}", headers={"Range": header})
    assert_error(response, 416, "RANGE_INVALID")
    assert response.headers["content-range"] == "bytes */1000"


async def test_malformed_range_serves_whole_blob(client: httpx.AsyncClient) -> None:
    data = os.urandom(50)
    digest = await push_blob(client, "r", data)
    for header in ("items=0-5", "bytes=0-1,4-5", "bytes=x-y"):
        response = await client.get(f"/v2/r/blobs/{digest}", headers={"Range": header})
        assert response.status_code == 200 and response.content == data


async def test_unknown_blob_is_404(client: httpx.AsyncClient) -> None:
    missing = sha256(b"never pushed")
    assert_error(await client.get(f"/v2/x/blobs/{missing}"), 404, "BLOB_UNKNOWN")
    head = await client.head(f"/v2/x/blobs/{missing}")
    assert head.status_code == 404 and head.content == b""


async def test_blob_is_visible_only_where_linked(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "owner", b"private bytes")
    assert_error(await client.get(f"/v2/stranger/blobs/{digest}"), 404, "BLOB_UNKNOWN")


async def test_delete_blob(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "d", b"bye")
    response = await client.delete(f"/v2/d/blobs/{digest}")
    assert response.status_code == 202
    assert_error(await client.get(f"/v2/d/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(await client.delete(f"/v2/d/blobs/{digest}"), 404, "BLOB_UNKNOWN")


async def test_invalid_digest_is_400(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v2/x/blobs/sha256:1234"), 400, "DIGEST_INVALID")
    assert_error(await client.get("/v2/x/blobs/notadigest"), 400, "DIGEST_INVALID")
