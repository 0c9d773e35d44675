"""The delivery stage: base images made from Debian packages, the image, the compose stack.

Slow (minutes), so ``make test`` leaves it out and ``make delivery-test`` runs it. Like the
end-to-end tests it skips when a tool is missing, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Docker, free_port, require

ROOT = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"
PYTHON_BASE = "registry-base/python:bookworm"
NGINX_BASE = "registry-base/nginx:bookworm"
IMAGE = "registry:delivery-test"
SOURCE_DATE_EPOCH = "1700000000"
USER, PASSWORD = "delivery", "delivery-password-123"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command from the project root (plus ``env``); fail the test with its output."""
    result = subprocess.run(
        args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def tools() -> None:
    for tool in ("debootstrap", "podman", "curl", "shellcheck"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")
    require(compose_command() is not None, "neither docker-compose nor docker compose is installed")
    require(Path(DOCKER).exists(), f"no docker client at {DOCKER}")
    info = subprocess.run([DOCKER, "info"], capture_output=True, text=True, timeout=60)
    require(info.returncode == 0, "no docker daemon answers")


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    plugin = subprocess.run([DOCKER, "compose", "version"], capture_output=True, timeout=60)
    return [DOCKER, "compose"] if plugin.returncode == 0 else None


@pytest.fixture(scope="session")
def base_images(tools: None) -> tuple[str, str]:
    """The local stand-ins for python:3.12-slim-bookworm and nginx (kept once made)."""
    env = {"PYTHON_BASE": PYTHON_BASE, "NGINX_BASE": NGINX_BASE}
    made = run("scripts/make-base-images.sh", env=env).stdout
    assert PYTHON_BASE in made and NGINX_BASE in made
    return PYTHON_BASE, NGINX_BASE


def build_args(base: str) -> list[str]:
    args = [
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", f"SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH}",
        "--build-arg", "REVISION=delivery-test",
        "--build-arg", "VERSION=0.0.0-delivery",
    ]  # fmt: skip
    cert = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    if Path(cert).is_file():
        args += ["--secret", f"id=pip-cert,src={cert}"]
    return args


@pytest.fixture(scope="session")
def reproducibility_check(base_images: tuple[str, str]) -> Iterator[subprocess.Popen[str]]:
    """scripts/check-reproducible.sh, started early: its two clean builds run while the other
    tests build the docker image and drive the compose stack."""
    env = {"BASE_IMAGE": base_images[0], "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    with subprocess.Popen(
        ["scripts/check-reproducible.sh"],
        cwd=ROOT,
        env={**os.environ, **env, "BUILDER": "podman"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        yield process
        if process.poll() is None:
            process.terminate()


@pytest.fixture(scope="session")
def image(base_images: tuple[str, str], reproducibility_check: subprocess.Popen[str]) -> str:
    """The project image, built by docker's BuildKit from the Dockerfile as a user would."""
    run(
        DOCKER, "build", "--no-cache", "--network", "host", *build_args(base_images[0]),
        "-t", IMAGE, ".",
        env={"DOCKER_BUILDKIT": "1"},
    )  # fmt: skip
    return IMAGE


@dataclass
class Stack:
    """docker-compose-local.yaml brought up under its own project name."""

    command: list[str]
    env: dict[str, str]
    port: int

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(*self.command, *args, env=self.env)

    def health(self, service: str) -> str:
        container = self.compose("ps", "-q", service).stdout.strip()
        return run(
            DOCKER, "inspect", "--format", "{{.State.Health.Status}}", container
        ).stdout.strip()


@pytest.fixture(scope="session")
def stack(image: str, base_images: tuple[str, str]) -> Iterator[Stack]:
    command = compose_command()
    assert command is not None
    project = f"delivery{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        "REGISTRY_IMAGE": image,
        "NGINX_IMAGE": base_images[1],
        "REGISTRY_HTTP_PORT": str(port),
        "REGISTRY_USERNAME": USER,
        "REGISTRY_PASSWORD": PASSWORD,
        "COMPOSE_PROJECT_NAME": project,
    }
    stack = Stack([*command, "-f", "docker-compose-local.yaml", "-p", project], env, port)
    try:
        stack.compose("up", "-d", "--no-build")
        deadline = time.monotonic() + 120
        while stack.health("nginx") != "healthy" and time.monotonic() < deadline:
            time.sleep(1)
        yield stack
    finally:
        logs = subprocess.run(
            [*stack.command, "logs", "--no-color"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        print(logs.stdout[-5000:])
        subprocess.run(
            [*stack.command, "down", "-v", "--remove-orphans"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            timeout=300,
        )


@pytest.fixture
def docker(tools: None, tmp_path: Path) -> Docker:
    return Docker(DOCKER, tmp_path / "docker-config")


def wait_for(url: str, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
