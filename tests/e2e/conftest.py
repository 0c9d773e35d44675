"""Real servers and real clients: the registry started as the README starts it.

Tools a test needs (docker, docker-registry, skopeo) are skipped when absent on a developer's
machine, but CI (``CI=true``) installs them, so there a missing tool fails the run instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "e2e-user", "e2e-password-123"


def require(condition: bool, why: str) -> None:
    """Skip locally, fail in CI: end-to-end tests must run there."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required in CI: {why}")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1, verify=False)  # noqa: S501 - up is all this asks
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(url)


@dataclass
class Server:
    """A server process on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    scheme: str = "http"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def stop(self) -> None:
        """Ask the server to stop, then make sure nothing of its process group is left."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the server and its workers at once, as a crash of the machine would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start_registry(data_dir: Path, log: Path, **env: str) -> Server:
    """``python -m registry`` with the README's settings, on a free loopback port."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    settings = {
        "REGISTRY_HOST": "127.0.0.1",
        "REGISTRY_PORT": str(port),
        "REGISTRY_DATA_DIR": str(data_dir),
        "REGISTRY_USERNAME": USER,
        "REGISTRY_PASSWORD": PASSWORD,
        "PYTHONPATH": str(ROOT),
        **env,
    }
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "registry"],
            env={**clean, **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data_dir.parent,
            start_new_session=True,  # its own process group: stop/kill reach every worker
        )
    server = Server(process, port, log, "https" if "REGISTRY_TLS__CERTFILE" in env else "http")
    try:
        wait_until_up(f"{server.url}/status/health", process)
    except BaseException:
        server.stop()
        raise
    return server


def start_distribution(data_dir: Path, workdir: Path, storage: str | None = None) -> Server:
    """The reference registry (Debian's ``docker-registry``) over ``data_dir``, no auth.

    ``storage`` replaces the filesystem storage block (YAML, indented under ``storage:``).
    """
    binary = shutil.which("docker-registry")
    require(
        binary is not None, "docker-registry is not installed (apt-get install docker-registry)"
    )
    assert binary is not None
    port = free_port()
    storage_block = storage or f"  filesystem:\n    rootdirectory: {data_dir}\n"
    config = workdir / f"distribution-{port}.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n{storage_block}  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = workdir / f"distribution-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, "serve", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            # its AWS SDK refuses a custom CA bundle with the transport it uses (panics)
            env={k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
            start_new_session=True,
        )
    server = Server(process, port, log)
    try:
        wait_until_up(f"{server.url}/v2/", process)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(params=["hypercorn", "granian", "uvicorn"])
def registry_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """The registry as the README starts it, under each HTTP server it supports."""
    server = start_registry(
        tmp_path / "data", tmp_path / "registry.log", REGISTRY_SERVER=request.param
    )
    yield server
    server.stop()


class Docker:
    """The real docker CLI with its own config folder (logins stay inside the test)."""

    def __init__(self, binary: str, config_dir: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "DOCKER_CONFIG": str(config_dir), "DOCKER_BUILDKIT": "0"}

    def run(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def login(
        self, host: str, user: str, password: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run("login", host, "-u", user, "--password-stdin", input=password, check=check)

    def build_image(self, tag: str, context: Path, layers: int = 3) -> None:
        """A ``FROM scratch`` image with ``layers`` layers of fresh random bytes."""
        context.mkdir(parents=True, exist_ok=True)
        lines = ["FROM scratch"]
        for i in range(layers):
            (context / f"layer{i}.bin").write_bytes(os.urandom(256 * 1024 * (i + 1)))
            lines.append(f"COPY layer{i}.bin /layer{i}.bin")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        self.run("build", "-q", "-t", tag, str(context))

    def push(self, image: str) -> tuple[str, str]:
        """``docker push``: the digest it reports (asserted present) and its output."""
        output = self.run("push", image).stdout
        match = re.search(r"digest: (sha256:[0-9a-f]{64})", output)
        assert match, output
        return match[1], output

    def repo_digests(self, image: str) -> str:
        return self.run("image", "inspect", "--format", "{{json .RepoDigests}}", image).stdout


@pytest.fixture(scope="session")
def docker_binary() -> str:
    binary = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    require(binary is not None, "no docker client")
    assert binary is not None
    info = subprocess.run([binary, "info"], capture_output=True, text=True, timeout=60)
    require(info.returncode == 0, f"no docker daemon answers: {info.stderr.strip()[:200]}")
    return binary


@pytest.fixture
def docker(docker_binary: str, tmp_path: Path) -> Docker:
    return Docker(docker_binary, tmp_path / "docker-config")
