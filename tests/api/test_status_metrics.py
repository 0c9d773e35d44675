"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from config import Settings
from registry.app import create_app
from tests.helpers import push_blob

pytestmark = pytest.mark.anyio


async def test_health_and_ready_need_no_auth(anonymous: httpx.AsyncClient) -> None:
    health = await anonymous.get("/status/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await anonymous.get("/status/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


async def test_not_ready_when_storage_is_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data folder should be")
    settings = Settings(data_dir=blocker, username="u", password="p", _env_file=None)
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        response = await client.get("/status/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


async def test_metrics_count_bytes_and_operations(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    data = os.urandom(12345)
    digest = await push_blob(client, "m", data)
    await client.get(f"/v2/m/blobs/{digest}")
    await client.get(f"/v2/m/blobs/{digest}", headers={"Range": "bytes=0-99"})
    await client.get("/v2/m/manifests/missing")
    text = (await anonymous.get("/metrics")).text
    assert "registry_bytes_received_total 12345.0" in text
    assert "registry_bytes_sent_total 12445.0" in text
    assert 'registry_blob_operations_total{operation="get",result="ok"} 2.0' in text
    assert 'registry_blob_operations_total{operation="upload",result="ok"} 2.0' in text
    assert 'registry_manifest_operations_total{operation="get",result="404"} 1.0' in text
    assert "registry_uploads_in_progress 0.0" in text
    assert 'handler="/v2/{name:path}/blobs/{digest}"' in text
