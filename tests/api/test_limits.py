"""Limits: oversized headers, trickling bodies, too many open upload sessions per client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from config import LimitSettings, Settings
from registry.api.limits import BodyTimeout, _WatchedBody
from registry.app import create_app
from registry.oci.manifest import MAX_MANIFEST_SIZE
from tests.helpers import assert_error

pytestmark = pytest.mark.anyio


def client_for(tmp_path: Path, limits: LimitSettings) -> httpx.AsyncClient:
    settings = Settings(
        data_dir=tmp_path / "data", username="u", password="p", limits=limits, _env_file=None
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://r", auth=("u", "p"))


async def test_oversized_headers_get_431(tmp_path: Path) -> None:
    async with client_for(tmp_path, LimitSettings(max_header_bytes=2048)) as client:
        response = await client.get("/v2/", headers={"X-Padding": "a" * 4000})
        assert_error(response, 431, "UNSUPPORTED")
        assert (await client.get("/v2/", headers={"X-Padding": "a" * 100})).status_code == 200


async def test_a_stalled_body_is_cut_off_and_the_session_stays_usable(tmp_path: Path) -> None:
    async with client_for(tmp_path, LimitSettings(body_idle_seconds=0.3)) as client:
        location = (await client.post("/v2/slow/blobs/uploads/")).headers["location"]

        async def stalls() -> AsyncIterator[bytes]:
            yield b"first bytes"
            await asyncio.sleep(2)
            yield b"never"

        response = await client.patch(location, content=stalls())
        assert_error(response, 408, "BLOB_UPLOAD_INVALID")
        status = await client.get(location)  # nothing of the cut-off request was kept
        assert status.status_code == 204 and status.headers["range"] == "0-0"
        assert (await client.patch(location, content=b"again")).status_code == 202


def sender(gaps: list[float]) -> tuple[asyncio.Queue[dict[str, object]], asyncio.Task[None]]:
    """A body arriving in pieces, each ``gap`` seconds after the one before; ends with the last."""
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def send() -> None:
        for index, gap in enumerate(gaps):
            await asyncio.sleep(gap)
            await queue.put(
                {"type": "http.request", "body": b"x", "more_body": index < len(gaps) - 1}
            )

    return queue, asyncio.create_task(send())


async def test_a_body_with_pauses_shorter_than_the_limit_is_read_whole() -> None:
    """Pauses of 0.6 x the limit, five of them: the one timer keeps moving on, never fires."""
    queue, sending = sender([0.12] * 5)
    body = _WatchedBody(queue.get, idle=0.2, min_rate=0)
    messages = [await body.receive() for _ in range(5)]
    assert [m["more_body"] for m in messages] == [True] * 4 + [False]
    await sending
    assert body._timer is None  # the whole body came: no timer is left behind


async def test_only_waiting_counts_not_the_time_the_reader_spends_elsewhere() -> None:
    queue, sending = sender([0, 0, 0.1])
    body = _WatchedBody(queue.get, idle=0.2, min_rate=0)
    await body.receive()
    await asyncio.sleep(0.5)  # the app is busy (a slow disk): not the client's fault
    await body.receive()
    assert (await body.receive())["more_body"] is False
    await sending


async def test_a_stall_times_out_after_the_limit_and_leaves_the_task_uncancelled() -> None:
    queue, sending = sender([0, 5])
    body = _WatchedBody(queue.get, idle=0.2, min_rate=0)
    await body.receive()
    started = asyncio.get_running_loop().time()
    with pytest.raises(BodyTimeout):
        await body.receive()
    waited = asyncio.get_running_loop().time() - started
    assert 0.19 <= waited < 1.0, waited
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    sending.cancel()


async def test_a_cancellation_from_elsewhere_is_not_taken_for_a_timeout() -> None:
    queue, sending = sender([0, 5])
    body = _WatchedBody(queue.get, idle=10, min_rate=0)
    await body.receive()
    reader = asyncio.create_task(body.receive())
    await asyncio.sleep(0.05)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    body.close()
    sending.cancel()


async def test_open_upload_sessions_per_client_are_capped(tmp_path: Path) -> None:
    async with client_for(tmp_path, LimitSettings(max_uploads_per_client=3)) as client:
        locations = [
            (await client.post("/v2/cap/blobs/uploads/")).headers["location"] for _ in range(3)
        ]
        refused = await client.post("/v2/cap/blobs/uploads/")
        assert_error(refused, 429, "TOOMANYREQUESTS")
        assert refused.headers["retry-after"] == "60"
        assert (await client.delete(locations[0])).status_code == 204  # one ends ...
        assert (await client.post("/v2/cap/blobs/uploads/")).status_code == 202  # ... one starts


async def test_manifest_size_is_limited(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v2/big/manifests/v1",
        content=b"{" + b" " * MAX_MANIFEST_SIZE + b"}",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert_error(response, 413, "MANIFEST_INVALID")
