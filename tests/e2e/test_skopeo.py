"""skopeo: copy an OCI layout in and out, inspect, list tags, delete."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import PASSWORD, USER, Server, require

pytestmark = pytest.mark.e2e
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs/sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_image_layout(layout: Path, tag: str, config: bytes, layers: list[bytes]) -> str:
    """An OCI image layout holding one image, tagged ``tag``; returns the manifest digest."""
    layout.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **write_blob(layout, config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", **write_blob(layout, layer)}
                for layer in layers
            ],
        }
    ).encode()
    described = write_blob(layout, manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                **described,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return str(described["digest"])


def make_layout(layout: Path, tag: str, layers: int) -> str:
    """An OCI image layout with one image of ``layers`` random layers; returns its digest."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    return write_image_layout(layout, tag, config, [os.urandom(50_000) for _ in range(layers)])


def skopeo(*args: str) -> str:
    binary = shutil.which("skopeo")
    require(binary is not None, "skopeo is not installed (apt-get install skopeo)")
    assert binary is not None
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_skopeo_round_trip(registry_server: Server, tmp_path: Path) -> None:
    digest = make_layout(tmp_path / "src", "v1", layers=3)
    target = f"docker://{registry_server.host}/tools/skopeo/img:v1"
    creds = f"{USER}:{PASSWORD}"
    skopeo(
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds,
        f"oci:{tmp_path / 'src'}:v1",
        target,
    )

    inspected = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", creds, target))
    assert inspected["Digest"] == digest
    assert len(inspected["Layers"]) == 3
    tags = json.loads(
        skopeo("list-tags", "--tls-verify=false", "--creds", creds, target.rsplit(":", 1)[0])
    )
    assert tags["Tags"] == ["v1"]

    skopeo(
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-creds",
        creds,
        target,
        f"oci:{tmp_path / 'dst'}:v1",
    )
    for blob in (tmp_path / "src/blobs/sha256").iterdir():
        assert (tmp_path / "dst/blobs/sha256" / blob.name).read_bytes() == blob.read_bytes()

    skopeo("delete", "--tls-verify=false", "--creds", creds, f"{target.rsplit(':', 1)[0]}@{digest}")
    binary = shutil.which("skopeo")
    assert binary is not None
    gone = subprocess.run(
        [binary, "inspect", "--tls-verify=false", "--creds", creds, target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gone.returncode != 0 and "manifest unknown" in gone.stderr.lower()
