"""Several hypercorn workers: an upload's requests may land on any of them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from registry.__main__ import default_workers
from tests.e2e.conftest import PASSWORD, USER, start_registry

pytestmark = pytest.mark.e2e


def test_chunked_uploads_across_workers(tmp_path: Path) -> None:
    server = start_registry(tmp_path / "data", tmp_path / "registry.log", REGISTRY_WORKERS="2")
    try:
        for round_number in range(8):
            data = os.urandom(2 * 1024 * 1024 + round_number)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            # A new connection per request lets the kernel hand each one to either worker.
            start = httpx.post(f"{server.url}/v2/w/blobs/uploads/", auth=(USER, PASSWORD))
            location = server.url + start.headers["location"]
            chunk = 512 * 1024
            for offset in range(0, len(data), chunk):
                piece = data[offset : offset + chunk]
                response = httpx.patch(
                    location,
                    content=piece,
                    auth=(USER, PASSWORD),
                    headers={"Content-Range": f"{offset}-{offset + len(piece) - 1}"},
                )
                assert response.status_code == 202, response.text
            done = httpx.put(location, params={"digest": digest}, auth=(USER, PASSWORD))
            assert done.status_code == 201, done.text
            pulled = httpx.get(f"{server.url}/v2/w/blobs/{digest}", auth=(USER, PASSWORD))
            assert hashlib.sha256(pulled.content).hexdigest() == digest.split(":")[1]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'registry_blob_operations_total{operation="upload",result="ok"} 16.0' in metrics
    finally:
        server.stop()


def test_default_is_one_worker_per_cpu_and_the_metrics_folder_goes_away(tmp_path: Path) -> None:
    workers = default_workers()
    server = start_registry(tmp_path / "data", tmp_path / "registry.log")
    try:
        started = server.log.read_text()
        assert f"hypercorn, {workers} worker" in started, started
        # the workers log too (they are spawned fresh and set up their own logging)
        for _ in range(workers * 2):  # new connections: the kernel spreads them over workers
            refused = httpx.get(f"{server.url}/v2/", auth=(USER, "wrong"))
            assert refused.status_code == 401
        log = server.log.read_text()
        assert "INFO login from 127.0.0.1 refused" in log
        assert log.count("Running on") == workers, log  # once per worker, in one format
        if workers > 1:
            pid = server.process.pid
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            assert len(children) >= workers  # the workers (and multiprocessing's tracker)
            metrics_dirs = {
                Path(variable.split("=", 1)[1])
                for child in children
                for variable in Path(f"/proc/{child}/environ").read_bytes().decode().split("\0")
                if variable.startswith("PROMETHEUS_MULTIPROC_DIR=")
            }
            assert len(metrics_dirs) == 1 and next(iter(metrics_dirs)).is_dir()
    finally:
        server.stop()
    if workers > 1:
        assert not next(iter(metrics_dirs)).exists()  # removed when the server stopped
