"""Command line: ``python -m registry [serve | gc | scrub | hash-password]``."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from config import Settings

if TYPE_CHECKING:
    import uvicorn

APPLICATION = "registry.app:create_app_from_env()"
APPLICATION_FACTORY = "registry.app:create_app_from_env"
MAX_AUTO_WORKERS = 8  # ~25-40 MiB each (forked); more only when REGISTRY_WORKERS asks
HYPERCORN_READ_SIZE = 256 * 1024  # bytes per socket read (hypercorn: 64 KiB)
KEEP_ALIVE_SECONDS = 75  # an idle keep-alive connection is kept this long, under every server
GRACEFUL_SECONDS = 8  # requests in flight get this long on SIGTERM (docker waits 10 s)


def load_settings() -> Settings:
    """Settings from the environment, or exit with one clear line per problem."""
    try:
        return Settings()
    except ValidationError as error:
        for problem in error.errors():
            where = "REGISTRY_" + "__".join(str(part).upper() for part in problem["loc"])
            message = problem["msg"].removeprefix("Value error, ")
            print(f"registry: invalid setting {where}: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def announce_generated_user(settings: Settings) -> None:
    """On the first start with no user configured, create ``admin`` and print its password."""
    from registry.auth.basic import GENERATED_USER, ensure_generated_user

    if settings.has_configured_users:
        return
    password = ensure_generated_user(settings.generated_htpasswd)
    if password is not None:
        print(
            "\n".join(
                (
                    "=" * 64,
                    "No user configured: created one (shown only this once).",
                    f"  username: {GENERATED_USER}",
                    f"  password: {password}",
                    f"Its bcrypt hash is in {settings.generated_htpasswd}.",
                    "Set REGISTRY_USERNAME/REGISTRY_PASSWORD or REGISTRY_HTPASSWD_FILE to choose.",
                    "=" * 64,
                )
            ),
            flush=True,
        )


def check_access_settings(settings: Settings) -> None:
    """Load the policy file and signing key once before the workers do, or exit clearly."""
    from registry.auth.setup import create_access_controller

    try:
        create_access_controller(settings)
    except (OSError, ValueError) as error:
        print(f"registry: invalid access settings: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.auth.mode == "token":
        print(f"token authentication: service {settings.auth.service!r}", flush=True)


def check_tls_settings(settings: Settings) -> None:
    """Load the certificate and key once before the server does, or exit clearly."""
    tls = settings.tls
    if tls.certfile is None or tls.keyfile is None:
        return
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    except (OSError, ssl.SSLError) as error:
        print(f"registry: invalid TLS settings: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def available_cpus(
    cgroup_root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> int:
    """CPUs this process may use: its affinity mask, lowered by any cgroup v2 CPU quota on the
    way from its own cgroup up to the root (a container's limit, a systemd CPUQuota)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        lines = membership.read_text().splitlines()
        relative = next(line[3:] for line in lines if line.startswith("0::"))
    except (OSError, StopIteration):
        relative = "/"
    directory = cgroup_root / relative.strip("/")
    while True:
        quota = _cpu_quota(directory / "cpu.max")
        if quota is not None:
            cpus = min(cpus, quota)
        if directory == cgroup_root or cgroup_root not in directory.parents:
            return max(1, cpus)
        directory = directory.parent


def default_workers() -> int:
    """The worker count ``REGISTRY_WORKERS=0`` means: one per available CPU, at most 8."""
    return min(available_cpus(), MAX_AUTO_WORKERS)


def _cpu_quota(cpu_max: Path) -> int | None:
    """Whole CPUs a cgroup v2 ``cpu.max`` allows (at least one), or None for no limit."""
    try:
        quota, period = cpu_max.read_text().split()
        return None if quota == "max" else max(1, int(quota) // int(period))
    except (OSError, ValueError):
        return None


def serve(settings: Settings) -> int:
    """Run the registry, one worker per CPU unless told otherwise."""
    from registry.process import configure_logging

    workers = settings.workers or default_workers()
    metrics_dir = None
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # before anything imports prometheus_client: it picks its storage at import, and the
        # workers are forked from this process
        metrics_dir = tempfile.mkdtemp(prefix="registry-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    announce_generated_user(settings)
    check_access_settings(settings)
    check_tls_settings(settings)
    configure_logging(settings)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(
        f"registry listening on {'https' if settings.tls.enabled else 'http'}://"
        f"{host}:{settings.port} "
        f"({settings.server}, {workers} worker{'s' if workers > 1 else ''}, "
        f"data in {settings.data_dir})",
        flush=True,
    )
    try:
        if settings.server == "granian":
            return run_granian(settings, workers)
        if settings.server == "uvicorn":
            return run_uvicorn(settings, workers)
        return run_hypercorn(settings, host, workers)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def read_sockets_in_larger_pieces() -> None:
    """hypercorn reads a connection 64 KiB at a time (``MAX_RECV``); 256 KiB instead.

    Every piece becomes one ASGI message after five copies and a trip through hypercorn, h11
    and the app's receive path, so with 64 KiB a 1 GiB upload is 16,000 messages and that
    trip bounds the upload rate: a bare app on hypercorn received 0.72-0.77 GB/s, 1.4-2.2
    GB/s with 256 KiB (1 MiB was no better). hypercorn has no setting for it, so the module
    constant is changed; tests/test_process.py fails if a hypercorn release drops it.
    """
    from hypercorn.asyncio import tcp_server

    tcp_server.MAX_RECV = HYPERCORN_READ_SIZE


def run_hypercorn(settings: Settings, host: str, workers: int) -> int:
    """The default server: hypercorn with uvloop; several workers are forked (supervisor.py)."""
    from hypercorn.config import Config
    from hypercorn.run import run

    from registry import hypercorn_request_body, hypercorn_sendfile

    read_sockets_in_larger_pieces()
    hypercorn_request_body.install()
    hypercorn_sendfile.install()
    config = Config()
    config.application_path = APPLICATION
    config.bind = [f"{host}:{settings.port}"]
    config.worker_class = "uvloop"
    config.workers = 0  # hypercorn's 0: serve in this process (several: registry.supervisor)
    config.loglevel = settings.log_level.upper()
    config.errorlog = logging.getLogger("hypercorn.error")  # no handler of its own: one format
    config.include_server_header = False
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
    config.graceful_timeout = GRACEFUL_SECONDS
    config.h11_max_incomplete_size = settings.limits.max_header_bytes
    if settings.tls.enabled:
        config.certfile = str(settings.tls.certfile)
        config.keyfile = str(settings.tls.keyfile)
        config.alpn_protocols = ["http/1.1"]  # the upload path is tuned for HTTP/1.1 (h11)
    if workers == 1:
        from registry.process import import_first_request_modules

        import_first_request_modules()
        return run(config)
    from hypercorn.asyncio.run import uvloop_worker

    from registry.supervisor import run_workers

    sockets = config.create_sockets()
    listening = [*sockets.secure_sockets, *sockets.insecure_sockets]
    return run_workers(
        partial(uvloop_worker, config, sockets), listening, workers, config.graceful_timeout
    )


def server_head_cap(settings: Settings) -> int:
    """Bytes of a request head a server reads before giving up (granian's buffer, uvicorn's cap).

    Heads over ``max_header_bytes`` but under this reach the app, which answers 431 with an OCI
    error document; only heads far beyond it are cut off by the server itself.
    """
    return max(8 * settings.limits.max_header_bytes, 408 * 1024)


def run_granian(settings: Settings, workers: int) -> int:
    """The alternative server: granian (Rust HTTP/1.1), which reads and sends whole blobs itself
    (by path, outside Python and the event loop)."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    from registry.process import preload_for_forked_workers

    preload_for_forked_workers()  # granian forks its workers
    Server(
        APPLICATION_FACTORY,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(
            header_read_timeout=KEEP_ALIVE_SECONDS * 1000,  # ms
            max_buffer_size=server_head_cap(settings),
        ),
        log_level=LogLevels(settings.log_level),
        ssl_cert=settings.tls.certfile,
        ssl_key=settings.tls.keyfile,
    ).serve()
    return 0


def run_uvicorn(settings: Settings, workers: int) -> int:
    """The other alternative: uvicorn with uvloop and httptools (llhttp, in C), whose upload path
    copies a body twice where hypercorn's copies it six times; forked workers as for hypercorn.
    """
    import uvicorn

    from registry.process import import_first_request_modules
    from registry.uvicorn_protocol import capped_http_protocol

    config = uvicorn.Config(
        APPLICATION_FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=capped_http_protocol(server_head_cap(settings)),
        ws="none",
        lifespan="on",
        proxy_headers=False,  # the peer is the client, as under hypercorn and granian
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        log_config=None,  # configure_logging's format for uvicorn's loggers too
        log_level=settings.log_level,
        access_log=False,  # the app writes its own audit log
        ssl_certfile=settings.tls.certfile,
        ssl_keyfile=settings.tls.keyfile,
    )
    if workers == 1:
        import_first_request_modules()
        return 0 if serve_uvicorn(config) else 3  # 3: uvicorn's code for a failed start
    from registry.supervisor import run_workers

    listening = config.bind_socket()
    serve = partial(serve_uvicorn, config, [listening])
    return run_workers(serve, [listening], workers, GRACEFUL_SECONDS)


def serve_uvicorn(config: uvicorn.Config, sockets: list[socket.socket] | None = None) -> bool:
    """Run one uvicorn server until SIGTERM or SIGINT; whether it started.

    After stopping gracefully uvicorn raises the signal that stopped it again, for the handler
    it found; with the default one the process would end killed by it (143) where hypercorn's
    ends with 0. It finds one that ignores it instead, and the process ends normally.
    """
    import uvicorn

    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda number, frame: None)
    server = uvicorn.Server(config)
    server.run(sockets=sockets)
    return server.started


def hash_password() -> int:
    """Print an htpasswd line for a user, reading the password from the terminal or stdin."""
    from registry.auth.basic import hash_password as bcrypt_hash

    parser = argparse.ArgumentParser(prog="python -m registry hash-password")
    parser.add_argument("user")
    args = parser.parse_args(sys.argv[2:])
    password = getpass.getpass() if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    print(f"{args.user}:{bcrypt_hash(password)}")
    return 0


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    if command == "serve":
        return serve(load_settings())
    if command == "hash-password":
        return hash_password()
    if command in ("gc", "scrub"):
        from registry.commands import run_gc, run_scrub

        run = run_gc if command == "gc" else run_scrub
        return run(load_settings(), sys.argv[2:])
    print(
        "usage: python -m registry [serve | gc | scrub | hash-password USER]\n"
        "  serve          run the registry (settings from REGISTRY_* variables and .env)\n"
        "  gc             garbage-collect (--dry-run, --delete-untagged, --json); safe online\n"
        "  scrub          re-hash every blob, report mismatches (--quarantine moves them aside)\n"
        "  hash-password  print an htpasswd line (bcrypt) for USER",
        file=sys.stderr,
    )
    return 0 if command in ("-h", "--help", "help") else 2


if __name__ == "__main__":
    sys.exit(main())
