"""The server's timers: expired upload sessions are purged; the optional online GC runs."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from config import GCSettings, Settings
from registry.app import create_app
from tests.helpers import push_blob

pytestmark = pytest.mark.anyio
HOURS_AGO = time.time() - 3 * 3600


def age(root: Path) -> None:
    """Make every file and folder under ``root`` look three hours old."""
    for path in [root, *root.rglob("*")]:
        os.utime(path, (HOURS_AGO, HOURS_AGO))


async def test_timers_purge_expired_sessions_and_collect(tmp_path: Path) -> None:
    gc = GCSettings(
        upload_max_age_seconds=3600, upload_purge_interval_seconds=0.05, interval_seconds=0.05
    )
    settings = Settings(data_dir=tmp_path, username="u", password="p", gc=gc, _env_file=None)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://r", auth=("u", "p")) as c:
        old = (await c.post("/v2/bg/blobs/uploads/")).headers["location"]
        assert (await c.patch(old, content=b"abandoned")).status_code == 202
        orphan = await push_blob(c, "bg", b"referenced by nothing")
        age(tmp_path / "docker")
        fresh = (await c.post("/v2/bg/blobs/uploads/")).headers["location"]
        hex_digest = orphan.split(":")[1]
        orphan_data = tmp_path / f"docker/registry/v2/blobs/sha256/{hex_digest[:2]}/{hex_digest}"
        session = tmp_path / "docker/registry/v2/repositories/bg/_uploads" / old.rsplit("/")[-1]
        async with app.router.lifespan_context(app):  # look at files: a HEAD counts as a use
            for _ in range(100):
                await asyncio.sleep(0.05)
                if not orphan_data.exists() and not session.exists():
                    break
        assert (await c.get(old)).json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        assert (await c.head(f"/v2/bg/blobs/{orphan}")).status_code == 404
        assert (await c.get(fresh)).status_code == 204  # a young session stays
