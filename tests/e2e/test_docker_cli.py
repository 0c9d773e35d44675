"""The real docker CLI against the registry started as a subprocess."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PASSWORD, USER, Docker, Server

pytestmark = pytest.mark.e2e


def test_login_push_pull_multi_layer_nested_name(
    docker: Docker, registry_server: Server, tmp_path: Path
) -> None:
    host = registry_server.host
    image = f"{host}/team/app/api:1.0-{uuid.uuid4().hex[:8]}"
    docker.build_image(image, tmp_path / "context", layers=3)
    try:
        refused = docker.login(host, USER, "wrong-password", check=False)
        assert refused.returncode != 0
        assert "401" in refused.stderr or "unauthorized" in refused.stderr.lower()

        docker.login(host, USER, PASSWORD)
        digest, pushed = docker.push(image)
        assert pushed.count("Pushed") == 3

        tag = image.rsplit(":", 1)[1]
        head = httpx.head(
            f"{registry_server.url}/v2/team/app/api/manifests/{tag}",
            auth=(USER, PASSWORD),
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        assert head.headers["docker-content-digest"] == digest

        docker.run("rmi", image)
        pulled = docker.run("pull", image).stdout
        assert f"Digest: {digest}" in pulled
        assert digest in docker.repo_digests(image)

        # A second push finds every layer present and only re-sends the manifest.
        again = docker.run("push", image).stdout
        assert again.count("Layer already exists") == 3
    finally:
        docker.run("rmi", "-f", image, check=False)


def test_push_without_login_is_refused(
    docker: Docker, registry_server: Server, tmp_path: Path
) -> None:
    image = f"{registry_server.host}/anon/app:1"
    docker.build_image(image, tmp_path / "context", layers=1)
    try:
        result = docker.run("push", image, check=False)
        assert result.returncode != 0
        assert (
            "no basic auth credentials" in result.stderr or "unauthorized" in result.stderr.lower()
        )
    finally:
        docker.run("rmi", "-f", image, check=False)
