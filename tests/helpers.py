"""Small client-side helpers for pushing content in tests."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.storage.filesystem import mapped, residency

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The response is the spec's error document with ``code`` and the expected status."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert [e["code"] for e in body["errors"]] == [code], body
    assert {"code", "message", "detail"} <= set(body["errors"][0])


async def push_blob(client: httpx.AsyncClient, name: str, data: bytes) -> str:
    """Monolithic push (POST then PUT); returns the digest."""
    digest = sha256(data)
    started = await client.post(f"/v2/{name}/blobs/uploads/")
    assert started.status_code == 202, started.text
    done = await client.put(
        started.headers["location"],
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert done.status_code == 201, done.text
    return digest


def descriptor(data: bytes, media_type: str = OCI_LAYER, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def image_manifest(
    config: bytes, layers: list[bytes], media_type: str = OCI_MANIFEST, **extra: Any
) -> bytes:
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config, OCI_CONFIG),
        "layers": [descriptor(layer) for layer in layers],
        **extra,
    }
    return json.dumps(document, indent=3).encode()


async def push_image(
    client: httpx.AsyncClient, name: str, reference: str, layers: list[bytes], **extra: Any
) -> tuple[str, bytes]:
    """Push config, layers and an OCI manifest; returns (manifest digest, manifest bytes)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": reference}).encode()
    for blob in [config, *layers]:
        await push_blob(client, name, blob)
    raw = image_manifest(config, layers, **extra)
    response = await client.put(
        f"/v2/{name}/manifests/{reference}", content=raw, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 201, response.text
    return sha256(raw), raw


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (written back first); skips the test on a
    filesystem that keeps files in memory (tmpfs), where there is nothing to drop."""
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if path.stat().st_size and in_memory(path):
        pytest.skip("this filesystem keeps files in memory")


def resident_pages(path: Path) -> list[bool]:
    """Which pages of ``path`` are in the page cache, by mincore(2): a look that reads nothing
    and, through an O_NOATIME descriptor, leaves the access time alone."""
    size = path.stat().st_size
    if not size:
        return []
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    try:
        with mapped(fd, 0, size) as address:
            return [bool(flag & 1) for flag in residency(address, size)]
    finally:
        os.close(fd)


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` in the page cache (its access time left as it was)."""
    return sum(resident_pages(path)) * mmap.PAGESIZE


def in_memory(path: Path) -> bool:
    """Whether every page of ``path`` is in the page cache."""
    return all(resident_pages(path))


RECLAIMED_ON_ITS_OWN = 1024 * 1024
"""Bytes of a file just read that these VMs may page out on their own: their kernels run a
DAMON ``pageout`` scheme, seen taking up to 18 pages of a file read a moment before."""


def kept_in_memory(path: Path) -> bool:
    """Whether ``path`` stays in the page cache: every page, but for what the machine's own
    proactive reclaim (``RECLAIMED_ON_ITS_OWN``) may have taken since."""
    pages = resident_pages(path)
    return (len(pages) - sum(pages)) * mmap.PAGESIZE <= RECLAIMED_ON_ITS_OWN
