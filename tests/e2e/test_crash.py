"""SIGKILL in the middle of pushes, again and again: what was acknowledged survives whole.

Each round starts the server on the same data folder, lets a few clients push chunked blobs
and manifests, kills the server with SIGKILL at a random moment, and on the next start checks:
no stored blob's bytes differ from its digest, every manifest acknowledged with 201 pulls
whole, and every interrupted upload session either resumes to a correct blob or answers
BLOB_UPLOAD_UNKNOWN.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PASSWORD, USER, start_registry
from tests.helpers import OCI_MANIFEST, image_manifest, sha256

pytestmark = pytest.mark.e2e
ROUNDS = 2
CHUNK = 128 * 1024


@dataclass
class Interrupted:
    """An upload session a client was in the middle of."""

    name: str
    path: str  # the session's Location path
    data: bytes


@dataclass
class Ledger:
    acknowledged: list[tuple[str, str, bytes]] = field(default_factory=list)  # name, tag, raw
    interrupted: list[Interrupted] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def pusher(
    base: str, worker: int, round_number: int, ledger: Ledger, stop: threading.Event
) -> None:
    """Push images until the server dies; note what was acknowledged and what was cut."""
    name = f"crash/w{worker}"
    rng = random.Random(worker * 1000 + round_number)
    with httpx.Client(base_url=base, auth=(USER, PASSWORD), timeout=10) as client:
        for image in range(1000):
            if stop.is_set():
                return
            layers = [rng.randbytes(rng.randint(1, 5) * CHUNK + rng.randint(0, 999))]
            config = f'{{"w":{worker},"r":{round_number},"i":{image}}}'.encode()
            for blob in (config, *layers):
                location = None
                try:
                    location = client.post(f"/v2/{name}/blobs/uploads/").headers["location"]
                    for offset in range(0, len(blob), CHUNK):
                        piece = blob[offset : offset + CHUNK]
                        headers = {"Content-Range": f"{offset}-{offset + len(piece) - 1}"}
                        client.patch(location, content=piece, headers=headers)
                    done = client.put(location, params={"digest": sha256(blob)})
                    assert done.status_code == 201, done.text
                except httpx.TransportError:
                    if location is not None:
                        with ledger.lock:
                            ledger.interrupted.append(Interrupted(name, location, blob))
                    return
            tag = f"r{round_number}-i{image}"
            raw = image_manifest(config, layers)
            try:
                response = client.put(
                    f"/v2/{name}/manifests/{tag}",
                    content=raw,
                    headers={"Content-Type": OCI_MANIFEST},
                )
            except httpx.TransportError:
                return
            if response.status_code == 201:
                with ledger.lock:
                    ledger.acknowledged.append((name, tag, raw))


def verify_store(data_dir: Path) -> int:
    """Every visible blob's bytes match its digest; how many blobs there are."""
    blobs = list((data_dir / "docker/registry/v2/blobs/sha256").glob("*/*/data"))
    for blob in blobs:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.parent.name, blob
    return len(blobs)


def verify_acknowledged(client: httpx.Client, ledger: Ledger) -> None:
    for name, tag, raw in ledger.acknowledged:
        response = client.get(f"/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        assert response.status_code == 200 and response.content == raw, (name, tag)
        for digest in (
            line.split('"')[3] for line in raw.decode().splitlines() if '"digest"' in line
        ):
            blob = client.get(f"/v2/{name}/blobs/{digest}")
            assert blob.status_code == 200 and sha256(blob.content) == digest


def resume_or_unknown(client: httpx.Client, session: Interrupted) -> str:
    status = client.get(session.path)
    if status.status_code == 404:
        assert status.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        return "unknown"
    assert status.status_code == 204, status.text
    last = int(status.headers["range"].split("-")[1])
    have = 0 if last == 0 else last + 1  # every blob pushed here is longer than one byte
    rest = session.data[have:]
    headers = {"Content-Range": f"{have}-{have + len(rest) - 1}"} if rest else {}
    done = client.put(
        session.path, params={"digest": sha256(session.data)}, content=rest, headers=headers
    )
    assert done.status_code == 201, done.text
    return "resumed"


def test_sigkill_during_pushes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ledger = Ledger()
    outcomes: list[str] = []
    rng = random.Random(7)
    for round_number in range(ROUNDS + 1):
        server = start_registry(data_dir, tmp_path / f"registry-{round_number}.log")
        try:
            verify_store(data_dir)
            with httpx.Client(base_url=server.url, auth=(USER, PASSWORD), timeout=30) as client:
                verify_acknowledged(client, ledger)
                for session in ledger.interrupted:
                    outcomes.append(resume_or_unknown(client, session))
            ledger.interrupted.clear()
            if round_number == ROUNDS:
                break
            stop = threading.Event()
            threads = [
                threading.Thread(target=pusher, args=(server.url, w, round_number, ledger, stop))
                for w in range(3)
            ]
            for thread in threads:
                thread.start()
            before = len(ledger.acknowledged)
            deadline = time.monotonic() + 30  # let some pushes finish (bounded), then kill
            while len(ledger.acknowledged) == before and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.1, 0.6))
            server.kill()
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        finally:
            server.stop()
    assert ledger.acknowledged, "no manifest was acknowledged before the kills"
    assert verify_store(data_dir) > 0
    assert outcomes, "no upload was interrupted mid-session"
