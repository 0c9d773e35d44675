"""A real S3 HTTP endpoint for tests: moto in server mode on a free 127.0.0.1 port.

The driver talks to it over HTTP with real signing, exactly as to AWS or MinIO; each test
gets a bucket of its own. Any access key works; the standard AWS variables are set so that
the driver (and subprocess registries, and registry:2) find credentials the usual way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from config import S3Settings

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Endpoint:
    url: str
    process: subprocess.Popen[bytes]
    log: Path  # the endpoint's access log: one line per request

    def new_bucket(self) -> str:
        bucket = f"test-{uuid.uuid4().hex[:20]}"
        response = httpx.put(f"{self.url}/{bucket}", timeout=10)
        assert response.status_code == 200, response.text
        return bucket

    def settings(self, bucket: str | None = None, **extra: object) -> S3Settings:
        return S3Settings.model_validate(
            {
                "bucket": bucket or self.new_bucket(),
                "endpoint_url": self.url,
                "path_style": True,
                **extra,
            }
        )

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The ``REGISTRY_*`` variables for a registry process on ``bucket``."""
        return {
            **AWS_ENV,
            "REGISTRY_STORAGE__BACKEND": "s3",
            "REGISTRY_STORAGE__S3__BUCKET": bucket,
            "REGISTRY_STORAGE__S3__PREFIX": prefix,
            "REGISTRY_STORAGE__S3__ENDPOINT_URL": self.url,
            "REGISTRY_STORAGE__S3__PATH_STYLE": "true",
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def s3_endpoint(log: Path) -> Iterator[S3Endpoint]:
    """Start ``moto_server`` on a free port, wait until it answers, stop it afterwards."""
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which(
        "moto_server"
    )
    assert binary is not None, "moto_server not installed (dev dependency moto[server])"
    for name, value in AWS_ENV.items():
        os.environ.setdefault(name, value)
    port = _free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    endpoint = S3Endpoint(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited: {log.read_text()[-500:]}")
            try:
                httpx.get(endpoint.url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
