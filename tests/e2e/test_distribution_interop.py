"""One data folder, two registries: what registry:2 (distribution) wrote we serve, and back."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PASSWORD, USER, Docker, start_distribution, start_registry

pytestmark = pytest.mark.e2e


def test_distribution_writes_we_serve_then_we_write_it_serves(
    docker: Docker, tmp_path: Path
) -> None:
    data = tmp_path / "shared-data"
    data.mkdir()
    suffix = uuid.uuid4().hex[:8]

    distribution = start_distribution(data, tmp_path)
    first = f"{distribution.host}/interop/from-distribution:{suffix}"
    docker.build_image(first, tmp_path / "ctx1", layers=2)
    try:
        digest_one, _ = docker.push(first)
    finally:
        distribution.stop()
        docker.run("rmi", "-f", first, check=False)

    ours = start_registry(data, tmp_path / "ours.log")
    try:
        docker.login(ours.host, USER, PASSWORD)
        mirrored = f"{ours.host}/interop/from-distribution:{suffix}"
        assert f"Digest: {digest_one}" in docker.run("pull", mirrored).stdout
        tags = httpx.get(
            f"{ours.url}/v2/interop/from-distribution/tags/list", auth=(USER, PASSWORD)
        )
        assert tags.json()["tags"] == [suffix]
        docker.run("rmi", "-f", mirrored, check=False)

        second = f"{ours.host}/interop/from-ours:{suffix}"
        docker.build_image(second, tmp_path / "ctx2", layers=2)
        digest_two, _ = docker.push(second)
        docker.run("rmi", "-f", second, check=False)
    finally:
        ours.stop()

    distribution = start_distribution(data, tmp_path)
    try:
        back = f"{distribution.host}/interop/from-ours:{suffix}"
        assert f"Digest: {digest_two}" in docker.run("pull", back).stdout
        catalog = httpx.get(f"{distribution.url}/v2/_catalog").json()["repositories"]
        assert {"interop/from-distribution", "interop/from-ours"} <= set(catalog)
        docker.run("rmi", "-f", back, check=False)
    finally:
        distribution.stop()
