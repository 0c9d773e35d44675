"""Many clients at once on a two-worker server: the same blob, and the same tag."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from registry.storage.filesystem import TRASH
from tests.e2e.conftest import PASSWORD, USER, Server, start_registry
from tests.helpers import OCI_MANIFEST, image_manifest, sha256

pytestmark = pytest.mark.e2e
CLIENTS = 20


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("concurrency") / "data"


@pytest.fixture(scope="module")
def two_workers(data_dir: Path) -> Iterator[Server]:
    """One two-worker server for the module (starting one costs seconds)."""
    server = start_registry(data_dir, data_dir.parent / "registry.log", REGISTRY_WORKERS="2")
    yield server
    server.stop()


def push_blob_chunked(base: str, name: str, data: bytes, chunk: int = 64 * 1024) -> int:
    """Push in chunks on a fresh connection; the final status."""
    with httpx.Client(base_url=base, auth=(USER, PASSWORD), timeout=60) as client:
        location = client.post(f"/v2/{name}/blobs/uploads/").headers["location"]
        for offset in range(0, len(data), chunk):
            piece = data[offset : offset + chunk]
            headers = {"Content-Range": f"{offset}-{offset + len(piece) - 1}"}
            response = client.patch(location, content=piece, headers=headers)
            assert response.status_code == 202, response.text
            location = response.headers["location"]
        return client.put(location, params={"digest": sha256(data)}).status_code


def leftovers(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.exists() else []


def test_twenty_clients_push_the_same_blob(two_workers: Server, data_dir: Path) -> None:
    data = os.urandom(512 * 1024 + 7)
    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(
            pool.map(lambda _: push_blob_chunked(two_workers.url, "same", data), range(CLIENTS))
        )
    assert statuses == [201] * CLIENTS
    digest = hashlib.sha256(data).hexdigest()
    blobs = list(data_dir.glob(f"docker/registry/v2/blobs/sha256/*/{digest}/data"))
    assert len(blobs) == 1  # stored once
    assert blobs[0].read_bytes() == data
    # A duplicate upload's bytes are removed just after its 201, so give that a moment; a
    # directory being removed passes through the trash, which empties too.
    uploads = data_dir / "docker/registry/v2/repositories/same/_uploads"
    deadline = time.monotonic() + 10
    while leftovers(uploads) + leftovers(data_dir / TRASH) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(uploads) + leftovers(data_dir / TRASH) == []
    temporaries = [p for p in data_dir.rglob("*") if p.name.endswith(".tmp")]
    assert temporaries in ([], [data_dir / TRASH])
    pulled = httpx.get(f"{two_workers.url}/v2/same/blobs/sha256:{digest}", auth=(USER, PASSWORD))
    assert pulled.content == data


def test_twenty_clients_push_different_manifests_to_one_tag(two_workers: Server) -> None:
    auth = (USER, PASSWORD)
    config, layer = b'{"os":"linux"}', os.urandom(2048)
    for blob in (config, layer):
        assert push_blob_chunked(two_workers.url, "tagged", blob) == 201
    manifests = [
        image_manifest(config, [layer], annotations={"client": str(i)}) for i in range(CLIENTS)
    ]

    def put(raw: bytes) -> int:
        with httpx.Client(base_url=two_workers.url, auth=auth, timeout=60) as client:
            response = client.put(
                "/v2/tagged/manifests/latest", content=raw, headers={"Content-Type": OCI_MANIFEST}
            )
            return response.status_code

    with ThreadPoolExecutor(CLIENTS) as pool:
        assert list(pool.map(put, manifests)) == [201] * CLIENTS
    current = httpx.get(
        f"{two_workers.url}/v2/tagged/manifests/latest",
        auth=auth,
        headers={"Accept": OCI_MANIFEST},
    )
    assert current.status_code == 200 and current.content in manifests  # exactly one, whole
    assert current.headers["docker-content-digest"] == sha256(current.content)
    json.loads(current.content)
    for raw in manifests:  # and every one of them is stored whole by digest
        by_digest = httpx.get(f"{two_workers.url}/v2/tagged/manifests/{sha256(raw)}", auth=auth)
        assert by_digest.content == raw
