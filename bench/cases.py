"""The benchmark cases. Each returns a figure and checks the answer it timed."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from bench.client import Connection, Response
from bench.servers import PASSWORD, USER, Server, dockerd_cpu_seconds

MIB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _path(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def connect(server: Server) -> Connection:
    return Connection("127.0.0.1", server.port, USER, PASSWORD)


def _start_upload(conn: Connection, repo: str) -> str:
    """POST a new upload session; its location (path and query)."""
    started = conn.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert started.status == 202, (started.status, started.body[:300])
    return _path(started.headers["location"])


def _assert_pushed(done: Response, digest: str) -> None:
    assert done.status == 201, (done.status, done.body[:300])
    assert done.headers["docker-content-digest"] == digest


def quiet_disk() -> None:
    """Write back every dirty page before a timed case, so it does not pay for the one before.

    distribution acknowledges a push before its bytes reach the disk (it never fsyncs); the
    kernel writes them back later, while whatever runs next is being timed.
    """
    os.sync()


def push_monolithic(server: Server, path: str, digest: str, repo: str = "bench/mono") -> float:
    """POST, then PUT with the whole body; seconds."""
    size = os.path.getsize(path)
    conn = connect(server)
    try:
        start = time.perf_counter()
        location = _start_upload(conn, repo)
        with open(path, "rb") as file:
            done = conn.request(
                "PUT",
                _with_digest(location, digest),
                file=file,
                count=size,
                headers={"Content-Type": "application/octet-stream"},
            )
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    _assert_pushed(done, digest)
    return elapsed


def push_chunked(
    server: Server, path: str, digest: str, chunk: int = 16 * MIB, repo: str = "bench/chunked"
) -> float:
    """POST, PATCH ``chunk``-sized pieces with Content-Range, PUT; seconds."""
    size = os.path.getsize(path)
    conn = connect(server)
    try:
        start = time.perf_counter()
        location = _start_upload(conn, repo)
        with open(path, "rb") as file:
            for offset in range(0, size, chunk):
                count = min(chunk, size - offset)
                response = conn.request(
                    "PATCH",
                    location,
                    file=file,
                    offset=offset,
                    count=count,
                    headers={
                        "Content-Range": f"{offset}-{offset + count - 1}",
                        "Content-Type": "application/octet-stream",
                    },
                )
                assert response.status == 202, (response.status, response.body[:300])
                location = _path(response.headers["location"])
        done = conn.request("PUT", _with_digest(location, digest))
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    _assert_pushed(done, digest)
    return elapsed


def pull(
    server: Server, digest: str, clients: int = 1, repo: str = "bench/mono"
) -> tuple[float, int]:
    """GET the blob with ``clients`` concurrent connections, each hashing what it receives.

    Returns (seconds for all to finish, total bytes received)."""
    results: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def one() -> None:
        conn = connect(server)
        try:
            response = conn.request("GET", f"/v2/{repo}/blobs/{digest}", hash_body=True)
            assert response.status == 200, response.status
            results.append((response.received, response.sha256))
        except BaseException as error:
            errors.append(error)
        finally:
            conn.close()

    threads = [threading.Thread(target=one) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    assert all(sha == digest.split(":")[1] for _, sha in results), "pulled bytes do not match"
    return elapsed, sum(received for received, _ in results)


def push_small_image(
    server: Server, repo: str = "bench/small", tag: str = "latest"
) -> tuple[str, bytes]:
    """A config, one layer and a manifest, for the small-request cases; (layer digest, manifest)."""
    import hashlib

    conn = connect(server)
    try:
        blobs = [json.dumps({"architecture": "amd64", "os": "linux"}).encode(), os.urandom(4096)]
        digests = []
        for blob in blobs:
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            location = _start_upload(conn, repo)
            _assert_pushed(conn.request("PUT", _with_digest(location, digest), body=blob), digest)
            digests.append(digest)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": digests[0],
                    "size": len(blobs[0]),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": digests[1],
                        "size": len(blobs[1]),
                    }
                ],
            }
        ).encode()
        put = conn.request(
            "PUT",
            f"/v2/{repo}/manifests/{tag}",
            body=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert put.status == 201, put
        got = conn.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        assert got.body == manifest
        return digests[1], manifest
    finally:
        conn.close()


def basic_authorization() -> str:
    """The ``Authorization`` header value for the bench user."""
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


_WRK_SCRIPT = """
wrk.method = "{method}"
wrk.headers["Authorization"] = "{auth}"
{extra}
"""


def wrk(
    server: Server,
    method: str,
    path: str,
    connections: int,
    seconds: int,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    auth: bool = True,
) -> dict[str, float]:
    """Requests/s and p50/p99 latency (ms) from wrk; fails if any response was not 2xx."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    if body is not None:
        extra += f"wrk.body = {json.dumps(body.decode())}\n"
    script = _WRK_SCRIPT.format(
        method=method, auth=basic_authorization() if auth else "", extra=extra
    )
    if not auth:
        script = script.replace('wrk.headers["Authorization"] = ""\n', "")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        output = subprocess.run(
            [
                binary,
                f"-t{min(2, connections)}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                file.name,
                f"http://127.0.0.1:{server.port}{path}",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
        ).stdout
    finally:
        os.unlink(file.name)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    assert bad is None, f"{server.name} {method} {path}: {bad[0]}\n{output}"
    assert errors is None or ("timeout 0" in errors[1] and "read 0" in errors[1]), output
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])  # type: ignore[index]
    return {"rps": rate, "p50_ms": _latency(output, "50%"), "p99_ms": _latency(output, "99%")}


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    assert match, output
    value, unit = float(match[1]), match[2]
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


class DockerCli:
    """The docker CLI with a private config folder, for the end-to-end case."""

    def __init__(self, workdir: Path) -> None:
        self.binary = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
        self.env = {
            **os.environ,
            "DOCKER_CONFIG": str(workdir / "docker-config"),
            "DOCKER_BUILDKIT": "0",
        }
        self.workdir = workdir

    def run(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [self.binary, *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=900,
        )
        if result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {result.stderr}")
        return result.stdout

    def build(self, tag: str, layers: int, layer_size: int) -> Path:
        """Build a ``FROM scratch`` image of random layers once; saved to a tar for reloading."""
        saved = self.workdir / f"image-{layers}x{layer_size // MIB}MiB.tar"
        if saved.exists():
            return saved
        context = self.workdir / "docker-context"
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir()
        lines = ["FROM scratch"]
        for i in range(layers):
            with open(context / f"layer{i}", "wb") as file:
                for _ in range(layer_size // MIB):
                    file.write(os.urandom(MIB))
            lines.append(f"COPY layer{i} /layer{i}")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        self.run("build", "-q", "-t", tag, str(context))
        self.run("save", "-o", str(saved), tag)
        self.run("rmi", tag)
        shutil.rmtree(context)
        return saved

    def push_pull(
        self, server: Server, saved: Path, image: str, server_cpu: Callable[[], float]
    ) -> tuple[float, float, float, float]:
        """Seconds for ``docker push`` and, with nothing left locally, ``docker pull``; the
        server's CPU seconds during the push (``server_cpu`` reads its running total), and
        dockerd's (its gzip, on the same cores, decides much of the push's time)."""
        host = f"127.0.0.1:{server.port}"
        self.run("login", host, "-u", USER, "--password-stdin", stdin=PASSWORD)
        target = f"{host}/{image}"
        self.run("load", "-q", "-i", str(saved))
        self.run("tag", image, target)
        quiet_disk()
        used, dockerd_used, start = server_cpu(), dockerd_cpu_seconds(), time.perf_counter()
        pushed = self.run("push", target)
        push_seconds = time.perf_counter() - start
        push_cpu = server_cpu() - used
        dockerd_cpu = dockerd_cpu_seconds() - dockerd_used
        digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
        assert digest, pushed
        self.run("rmi", target, image)
        quiet_disk()
        start = time.perf_counter()
        pulled = self.run("pull", target)
        pull_seconds = time.perf_counter() - start
        assert f"Digest: {digest[1]}" in pulled, pulled
        # a layer left on this machine (another tag of the image) would not be downloaded
        assert "Already exists" not in pulled and "up to date" not in pulled, pulled
        self.run("rmi", target)
        return push_seconds, pull_seconds, push_cpu, dockerd_cpu
