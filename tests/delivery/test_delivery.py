"""The image, the compose stack behind nginx with the real docker CLI, and reproducibility."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.delivery.conftest import (
    DOCKER,
    PASSWORD,
    SOURCE_DATE_EPOCH,
    USER,
    Stack,
    run,
    wait_for,
)
from tests.e2e.conftest import Docker

pytestmark = pytest.mark.delivery


def test_image_runs_as_documented(image: str) -> None:
    config = json.loads(
        run(DOCKER, "image", "inspect", "--format", "{{json .Config}}", image).stdout
    )
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["python", "-m", "registry"]
    assert "5000/tcp" in config["ExposedPorts"]
    assert "/data" in config["Volumes"]
    assert "/status/health" in " ".join(config["Healthcheck"]["Test"])
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] == "delivery-test"
    assert labels["org.opencontainers.image.version"] == "0.0.0-delivery"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    # Installed offline from the wheelhouse: the locked versions, byte-compiled with unchecked
    # hashes (flags word 1: hash-based, no source check), file times set to SOURCE_DATE_EPOCH.
    probe = (
        "import fastapi, pathlib, sys; "
        "pyc = next(pathlib.Path(fastapi.__file__).parent.glob('__pycache__/__init__.*.pyc')); "
        "print(fastapi.__version__, int.from_bytes(pyc.read_bytes()[4:8], 'little'), "
        "int(pyc.stat().st_mtime), sys.prefix)"
    )
    out = run(DOCKER, "run", "--rm", "--network", "none", image, "python", "-c", probe).stdout
    lock = (Path(__file__).parents[2] / "poetry.lock").read_text()
    version = re.search(r'name = "fastapi"\nversion = "([^"]+)"', lock)
    assert version
    assert out.split() == [version[1], "1", SOURCE_DATE_EPOCH, "/opt/venv"]


def test_push_and_pull_through_nginx(stack: Stack, docker: Docker, tmp_path: Path) -> None:
    assert stack.health("nginx") == "healthy"
    assert stack.health("registry") == "healthy"
    health = run("curl", "-fsS", f"http://{stack.host}/status/health").stdout
    assert json.loads(health) == {"status": "ok"}
    assert wait_for(f"http://{stack.host}/v2/").status_code == 401

    image = f"{stack.host}/delivery/app:{uuid.uuid4().hex[:8]}"
    docker.build_image(image, tmp_path / "context", layers=3)
    try:
        docker.login(stack.host, USER, PASSWORD)
        digest, pushed = docker.push(image)
        assert pushed.count("Pushed") == 3
        docker.run("rmi", image)
        pulled = docker.run("pull", image).stdout
        assert f"Digest: {digest}" in pulled
        assert digest in docker.repo_digests(image)
    finally:
        docker.run("rmi", "-f", image, check=False)

    # The data is in the named volume: it survives recreating the registry container.
    stack.compose("up", "-d", "--no-build", "--force-recreate", "registry")
    tags = wait_for_tags(stack, "delivery/app")
    assert image.rsplit(":", 1)[1] in tags


def wait_for_tags(stack: Stack, repository: str) -> list[str]:
    deadline = time.monotonic() + 90
    while True:
        try:
            response = httpx.get(
                f"http://{stack.host}/v2/{repository}/tags/list", auth=(USER, PASSWORD), timeout=5
            )
            if response.status_code == 200:
                tags: list[str] = response.json()["tags"]
                return tags
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the registry did not come back behind nginx")
        time.sleep(1)


def test_two_clean_builds_give_the_same_digest(
    reproducibility_check: subprocess.Popen[str],
) -> None:
    out, _ = reproducibility_check.communicate(timeout=1200)
    print(out)
    assert reproducibility_check.returncode == 0, out
    digests = re.findall(r"build [12]: (sha256:[0-9a-f]{64}) \(config (sha256:[0-9a-f]{64})\)", out)
    assert len(digests) == 2
    assert digests[0] == digests[1]
    assert f"reproducible: {digests[0][0]}" in out
