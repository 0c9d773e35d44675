"""podman and containerd's ctr against the registry started as the README starts it.

podman pushes a real image (tar layers, so it can unpack them) from an OCI layout and pulls it
back; ctr (talking to the containerd that dockerd runs) imports the same layout, pushes it under
another name, and fetches it again. Both must see the digests they pushed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import PASSWORD, USER, Server, require
from tests.e2e.test_skopeo import OCI_MANIFEST, write_image_layout

pytestmark = pytest.mark.e2e
CONTAINERD_SOCKETS = ("/run/docker/containerd/containerd.sock", "/run/containerd/containerd.sock")


def tar_layer(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(content), 0, 0o644
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def make_image_layout(layout: Path, tag: str) -> str:
    """An OCI layout with a runnable-shaped image of two tar layers; returns its digest."""
    layers = [tar_layer(f"file-{n}.bin", os.urandom(200_000)) for n in range(2)]
    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    config = {"architecture": "amd64", "os": "linux", "config": {}}
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    return write_image_layout(layout, tag, json.dumps(config).encode(), layers)


def run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[list[str]]:
    binary = shutil.which("podman")
    require(binary is not None, "podman is not installed (apt-get install podman)")
    assert binary is not None
    storage = tmp_path / "podman"
    runroot = Path(tempfile.mkdtemp(prefix="podman-run-"))  # podman wants < 50 characters
    command = [
        binary,
        "--root",
        str(storage / "root"),
        "--runroot",
        str(runroot),
        "--storage-driver",
        "vfs",
        "--events-backend",
        "none",
        "--cgroup-manager",
        "cgroupfs",
    ]
    yield command
    subprocess.run([*command, "system", "reset", "--force"], capture_output=True, timeout=120)
    shutil.rmtree(runroot, ignore_errors=True)


def test_podman_push_and_pull(registry_server: Server, podman: list[str], tmp_path: Path) -> None:
    make_image_layout(tmp_path / "layout", "v1")
    target = f"{registry_server.host}/tools/podman/img:v1"
    creds = f"{USER}:{PASSWORD}"
    run(*podman, "pull", f"oci:{tmp_path / 'layout'}:v1")
    local = run(*podman, "images", "--format", "{{.ID}}").split()[0]
    digest_file = tmp_path / "pushed-digest"
    run(
        *podman,
        "push",
        "--tls-verify=false",
        "--creds",
        creds,
        "--digestfile",
        str(digest_file),
        local,
        f"docker://{target}",
    )
    pushed = digest_file.read_text().strip()
    assert pushed.startswith("sha256:")

    run(*podman, "rmi", "--all", "--force")
    run(*podman, "pull", "--tls-verify=false", "--creds", creds, f"docker://{target}")
    pulled = run(*podman, "image", "inspect", "--format", "{{.Digest}}", target).strip()
    assert pulled == pushed

    wrong = subprocess.run(
        [*podman, "pull", "--tls-verify=false", "--creds", f"{USER}:wrong", f"docker://{target}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode != 0
    assert "unauthorized" in wrong.stderr.lower() or "authentication" in wrong.stderr.lower()


@pytest.fixture
def ctr() -> Iterator[list[str]]:
    binary = shutil.which("ctr")
    socket = next((path for path in CONTAINERD_SOCKETS if os.path.exists(path)), None)
    require(binary is not None and socket is not None, "ctr / a containerd socket is missing")
    assert binary is not None and socket is not None
    command = [binary, "--address", socket, "--namespace", f"registry-e2e-{uuid.uuid4().hex[:8]}"]
    yield command
    for name in run(*command, "images", "ls", "--quiet").split():
        subprocess.run([*command, "images", "rm", name], capture_output=True, timeout=60)
    subprocess.run([*command[:3], "namespaces", "rm", command[4]], capture_output=True, timeout=60)


def test_ctr_push_and_fetch(registry_server: Server, ctr: list[str], tmp_path: Path) -> None:
    digest = make_image_layout(tmp_path / "layout", "v1")
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted((tmp_path / "layout").iterdir()):
            tar.add(entry, arcname=entry.name)
    run(
        *ctr,
        "images",
        "import",
        "--no-unpack",
        "--all-platforms",
        "--base-name",
        "local/img",
        str(archive),
    )
    imported = run(*ctr, "images", "ls", "--quiet").split()
    assert imported, "ctr imported nothing"
    target = f"{registry_server.host}/tools/ctr/img:v1"
    run(*ctr, "images", "tag", imported[0], target)
    creds = f"{USER}:{PASSWORD}"
    run(*ctr, "images", "push", "--plain-http", "--user", creds, target)

    manifest = run(
        "curl", "-sf", "-u", creds, "-H", f"Accept: {OCI_MANIFEST}",
        f"{registry_server.url}/v2/tools/ctr/img/manifests/v1",
    )  # fmt: skip
    assert f"sha256:{hashlib.sha256(manifest.encode()).hexdigest()}" == digest

    run(*ctr, "images", "rm", target, imported[0])
    run(*ctr, "content", "fetch", "--plain-http", "--user", creds, target)
    fetched = run(*ctr, "content", "ls", "--quiet").split()
    assert digest in fetched
