"""Start the two registries under test on loopback, each on an empty data folder, Basic auth on."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "bench", "bench-password-42"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    data: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """Ask the server to stop, then make sure nothing of its process group is left."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()


def _wait(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(port)


def htpasswd_line() -> str:
    """The bench user, hashed at cost 5 as ``htpasswd -B`` does by default (a fair cost for
    distribution, which runs bcrypt on every request)."""
    import bcrypt

    return f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"


def _fresh_folders(workdir: Path, name: str) -> tuple[Path, Path]:
    """An empty data folder ``workdir/name`` and the bench user's htpasswd file."""
    data = workdir / name
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(htpasswd_line())
    return data, htpasswd


def start_ours(workdir: Path, extra_env: dict[str, str] | None = None) -> Server:
    """``python -m registry`` as the README starts it, users from an htpasswd file (bcrypt)."""
    data, htpasswd = _fresh_folders(workdir, "ours-data")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(
        REGISTRY_HOST="127.0.0.1",
        REGISTRY_PORT=str(port),
        REGISTRY_DATA_DIR=str(data),
        REGISTRY_HTPASSWD_FILE=str(htpasswd),
        REGISTRY_LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT),
        **(extra_env or {}),
    )
    log = open(workdir / "ours.log", "ab")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [sys.executable, "-m", "registry"],
        env=env,
        stdout=log,
        stderr=log,
        cwd=workdir,
        start_new_session=True,  # its own process group: the workers are found and stopped
    )
    _wait(port, process)
    return Server("ours", process, port, data)


def start_distribution(workdir: Path, auth: bool = True, storage: str | None = None) -> Server:
    """Debian's ``docker-registry`` (CNCF distribution) with filesystem storage and htpasswd.

    With ``auth=False`` it runs open (no auth section), for the unauthenticated small requests.
    ``storage`` replaces the filesystem block (YAML indented under ``storage:``), e.g. S3.
    """
    binary = shutil.which("docker-registry")
    if binary is None:
        raise SystemExit("docker-registry is not installed: apt-get install docker-registry")
    data, htpasswd = _fresh_folders(workdir, "distribution-data")
    port = free_port()
    storage_block = storage or f"  filesystem:\n    rootdirectory: {data}\n"
    config = workdir / "distribution.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n{storage_block}  delete:\n    enabled: true\n"
        + (f"auth:\n  htpasswd:\n    realm: bench\n    path: {htpasswd}\n" if auth else "")
        + f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = open(workdir / "distribution.log", "ab")  # noqa: SIM115
    # its AWS SDK panics on a custom CA bundle with its transport; plain http needs none
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    process = subprocess.Popen(
        [binary, "serve", str(config)], stdout=log, stderr=log, env=env, start_new_session=True
    )
    _wait(port, process)
    return Server("distribution", process, port, data)


def _all_stats() -> Iterator[tuple[int, str]]:
    """(pid, text of /proc/<pid>/stat) for every process still running."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # exited meanwhile
                with open(f"/proc/{entry.name}/stat") as file:
                    text = file.read()
                yield int(entry.name), text


def process_group(pgid: int) -> list[int]:
    """The processes of a server: its own and its workers (started in their own group)."""
    # the fields after "(comm)": state, ppid, pgrp, ...
    return [pid for pid, text in _all_stats() if int(text.rsplit(")", 1)[1].split()[2]) == pgid]


def peak_rss_reset(pgid: int) -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of every process of a server."""
    for pid in process_group(pgid):
        with (
            contextlib.suppress(FileNotFoundError, ProcessLookupError),  # exited meanwhile
            open(f"/proc/{pid}/clear_refs", "w") as file,
        ):
            file.write("5")


def _proc_files(pgid: int, name: str) -> Iterator[str]:
    """The text of ``/proc/<pid>/<name>`` for each process of a server still running."""
    for pid in process_group(pgid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # exited meanwhile
            with open(f"/proc/{pid}/{name}") as file:
                text = file.read()
            yield text


def _kib_fields(text: str, field: str) -> list[int]:
    """The values, in bytes, of the ``field:`` lines (kB) of a /proc status or smaps file."""
    return [int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith(field)]


def peak_rss(pgid: int) -> int:
    """The largest peak resident set size (bytes) of a server's processes since the last reset."""
    return max([0, *(sum(_kib_fields(text, "VmHWM:")) for text in _proc_files(pgid, "status"))])


def cpu_seconds(pgid: int) -> float:
    """User and system CPU seconds used so far by a server's processes."""
    return _cpu_seconds(_proc_files(pgid, "stat"))


def dockerd_cpu_seconds() -> float:
    """User and system CPU seconds used so far by dockerd (0 if it is not on this machine)."""
    return _cpu_seconds(text for _, text in _all_stats() if text.split(" ", 2)[1] == "(dockerd)")


def _cpu_seconds(stats: Iterable[str]) -> float:
    ticks = 0
    for text in stats:
        fields = text.rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class PssSampler:
    """The peak, sampled every 0.1 s, of the proportional set size summed over a server's
    processes: pages shared between them (a forked worker's modules) counted once, in shares.
    The kernel keeps no peak of it, so a spike shorter than a sample can be missed."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.total())
            if self._done.wait(0.1):
                return

    def total(self) -> int:
        """Bytes of PSS over the group now."""
        return sum(
            sum(_kib_fields(text, "Pss:")) for text in _proc_files(self.pgid, "smaps_rollup")
        )


def start_moto(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A local S3 endpoint (``moto_server`` from the dev dependencies); (process, URL)."""
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    binary = binary or shutil.which("moto_server")
    if binary is None:
        raise SystemExit("moto_server is not installed (make setup installs moto[server])")
    port = free_port()
    log = open(workdir / "moto.log", "ab")  # noqa: SIM115
    process = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            return process, url
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
