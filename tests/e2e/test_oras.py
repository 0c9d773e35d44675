"""oras (the Python client, from PyPI): push and pull an artifact with Basic auth."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import oras.client
import pytest

from tests.e2e.conftest import PASSWORD, USER, Server

pytestmark = pytest.mark.e2e


def test_oras_push_pull_artifact(
    registry_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # oras pushes files relative to the working directory
    host = registry_server.host
    client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
    client.login(
        username=USER,
        password=PASSWORD,
        hostname=host,
        tls_verify=False,
        config_path=str(tmp_path / "oras-auth.json"),
    )
    artifact = tmp_path / "notes.txt"
    artifact.write_text("release notes\n" * 100)
    target = f"{host}/artifacts/notes:v1"
    pushed = client.push(target=target, files=["notes.txt"])
    assert pushed.status_code == 201
    digest = pushed.headers["docker-content-digest"]

    pulled = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert [Path(p).read_text() for p in pulled] == [artifact.read_text()]
    assert client.get_tags(f"{host}/artifacts/notes") == ["v1"]

    manifest = httpx.get(
        f"{registry_server.url}/v2/artifacts/notes/manifests/{digest}", auth=(USER, PASSWORD)
    )
    assert manifest.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    layers = json.loads(manifest.content)["layers"]
    assert layers[0]["annotations"]["org.opencontainers.image.title"] == "notes.txt"
