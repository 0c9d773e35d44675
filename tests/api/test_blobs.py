"""Blob HEAD/GET with Range, DELETE, and repository isolation."""

from __future__ import annotations

import asyncio
import base64
import os

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message, Scope

from config import Settings
from tests.conftest import PASSWORD, USER
from tests.helpers import assert_error, evict, push_blob, sha256

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


async def asgi_get(app: FastAPI, path: str, *headers: tuple[bytes, bytes]) -> list[Message]:
    """One GET through the whole app, as a server offering ``http.response.pathsend`` makes it."""
    credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"registry.test"),
            (b"authorization", b"Basic " + credentials),
            *headers,
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("registry.test", 80),
        "extensions": {"http.response.pathsend": {}},
    }
    messages: list[Message] = []
    requested, finished = False, asyncio.Event()

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()  # then the client goes away, as a server reports it
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.append(message)
        if message["type"] == "http.response.pathsend" or (
            message["type"] == "http.response.body" and not message.get("more_body", False)
        ):
            finished.set()

    await app(scope, receive, send)
    return messages


async def test_whole_blobs_are_handed_to_a_server_that_sends_by_path(
    app: FastAPI, client: httpx.AsyncClient, backend: str, settings: Settings
) -> None:
    """A filesystem blob goes by path once it is in memory or was read before; the first read
    of one that is not streams it from the disk (around the page cache). S3 streams always."""
    data = os.urandom(300_000)
    digest = await push_blob(client, "team/app", data)
    if backend == "filesystem":
        (stored,) = settings.data_dir.rglob(f"blobs/sha256/*/{digest.split(':')[1]}/data")
        evict(stored)
    for read in ("first", "again"):
        start, *rest = await asgi_get(app, f"/v2/team/app/blobs/{digest}")
        assert start["type"] == "http.response.start" and start["status"] == 200
        headers = dict(start["headers"])
        assert headers[b"content-length"] == str(len(data)).encode()
        assert headers[b"docker-content-digest"] == digest.encode()
        if backend == "filesystem" and read == "again":
            assert [message["type"] for message in rest] == ["http.response.pathsend"]
            with open(rest[0]["path"], "rb") as file:  # noqa: ASYNC230 - a test's small read
                assert sha256(file.read()) == digest
        else:  # streamed through the app
            assert {message["type"] for message in rest} == {"http.response.body"}
            assert b"".join(message.get("body", b"") for message in rest) == data
    start, *rest = await asgi_get(app, f"/v2/team/app/blobs/{digest}", (b"range", b"bytes=5-9"))
    assert start["status"] == 206  # a range is always streamed
    assert b"".join(message.get("body", b"") for message in rest) == data[5:10]
    metrics = (await client.get("/metrics")).text
    assert f"registry_bytes_sent_total {float(2 * len(data) + 5)}" in metrics
