"""Several workers (hypercorn's, or uvicorn's under the same supervisor): an upload's requests
may land on any of them; one that dies is replaced."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from registry.__main__ import default_workers
from registry.supervisor import START_GRACE
from tests.e2e.conftest import PASSWORD, ROOT, USER, Server, start_registry

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
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    server = start_registry(tmp_path / "data", tmp_path / "registry.log", TMPDIR=str(scratch))
    try:
        started = server.log.read_text()
        assert f"hypercorn, {workers} worker" in started, started
        # the workers log too (they set up their own logging)
        for _ in range(workers * 2):  # new connections: the kernel spreads them over workers
            refused = httpx.get(f"{server.url}/v2/", auth=(USER, "wrong"))
            assert refused.status_code == 401
        log = server.log.read_text()
        assert "INFO login from 127.0.0.1 refused" in log
        assert log.count("Running on") == workers, log  # once per worker, in one format
        if workers > 1:
            assert len(worker_pids(server.process.pid)) == workers
            assert len(list(scratch.glob("registry-metrics-*"))) == 1
    finally:
        server.stop()
    assert not list(scratch.glob("registry-metrics-*"))  # removed when the server stopped


def start_workers(tmp_path: Path, server_name: str, workers: int, **env: str) -> Server:
    """The registry under ``server_name`` with ``workers`` worker processes."""
    return start_registry(
        tmp_path / "data",
        tmp_path / "registry.log",
        REGISTRY_SERVER=server_name,
        REGISTRY_WORKERS=str(workers),
        **env,
    )


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's children that are forked copies of it (same command line)."""
    command = Path(f"/proc/{supervisor}/cmdline").read_bytes()
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [int(c) for c in children if Path(f"/proc/{c}/cmdline").read_bytes() == command]


@pytest.mark.parametrize("server_name", ["hypercorn", "uvicorn"])
def test_a_worker_that_dies_is_replaced(tmp_path: Path, server_name: str) -> None:
    server = start_workers(tmp_path, server_name, 2)
    try:
        first = worker_pids(server.process.pid)
        assert len(first) == 2
        time.sleep(START_GRACE)  # past start-up: a death now is a crash, not a bad start
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = worker_pids(server.process.pid)
            if len(now) == 2 and first[0] not in now:
                break
            time.sleep(0.2)
        assert len(now) == 2 and first[0] not in now and first[1] in now, (first, now)
        for _ in range(8):  # new connections reach both workers, old and new
            pinged = httpx.get(f"{server.url}/v2/", auth=(USER, PASSWORD))
            assert pinged.status_code == 200
        assert f"worker {first[0]} exited with -9; starting another" in server.log.read_text()
    finally:
        server.stop()
    assert server.process.returncode == 0


def test_workers_that_die_at_start_up_stop_the_server(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from registry.supervisor import run_workers\n"
        "def serve():\n"
        "    import no_such_module\n"
        "sys.exit(run_workers(serve, [], 2, graceful_timeout=1))\n"
    )
    began = time.monotonic()
    ended = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert ended.returncode == 1, ended.stderr
    assert "at start-up" in ended.stderr
    assert time.monotonic() - began < 30


@pytest.mark.parametrize("server_name", ["hypercorn", "uvicorn"])
def test_ctrl_c_stops_the_supervisor_and_every_worker(tmp_path: Path, server_name: str) -> None:
    server = start_workers(tmp_path, server_name, 2)
    try:
        workers = worker_pids(server.process.pid)
        assert len(workers) == 2
        os.killpg(server.process.pid, signal.SIGINT)  # what a terminal's Ctrl+C sends
        assert server.process.wait(timeout=30) == 0
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    finally:
        server.stop()


WORKER_STARTED = {
    "hypercorn": "Running on",
    "granian": "Started worker-",
    "uvicorn": "Application startup complete",
}


@pytest.mark.parametrize(
    ("server_name", "workers"),
    [("hypercorn", 1), ("hypercorn", 2), ("granian", 2), ("uvicorn", 1), ("uvicorn", 2)],
)
def test_requests_import_no_modules(tmp_path: Path, server_name: str, workers: int) -> None:
    """What the requests need is imported before the workers fork: none pays an import."""
    server = start_workers(tmp_path, server_name, workers, PYTHONPROFILEIMPORTTIME="1")
    log = server.log
    try:
        deadline = time.monotonic() + 10
        started = WORKER_STARTED[server_name]
        while log.read_text().count(started) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
        served_from = len(log.read_text())
        data = os.urandom(3 * 1024 * 1024)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        pushed = httpx.post(
            f"{server.url}/v2/imports/blobs/uploads/",
            params={"digest": digest},
            content=data,
            auth=(USER, PASSWORD),
        )
        assert pushed.status_code == 201, pushed.text
        for _ in range(6):  # new connections: both workers serve some
            pulled = httpx.get(f"{server.url}/v2/imports/blobs/{digest}", auth=(USER, PASSWORD))
            assert hashlib.sha256(pulled.content).hexdigest() == digest.split(":")[1]
        imported = [
            line for line in log.read_text()[served_from:].splitlines() if "import time" in line
        ]
        assert not imported, imported
    finally:
        server.stop()


@pytest.mark.parametrize("server_name", ["hypercorn", "uvicorn"])
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_the_server_with_exit_code_0(
    tmp_path: Path, server_name: str, workers: int
) -> None:
    """``docker stop`` sends SIGTERM: the server stops gracefully and says so with 0."""
    server = start_workers(tmp_path, server_name, workers)
    try:
        assert httpx.get(f"{server.url}/v2/", auth=(USER, PASSWORD)).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()
