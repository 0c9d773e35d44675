"""Command line: ``python -m registry [serve | gc | scrub | hash-password]``."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from config import Settings

APPLICATION = "registry.app:create_app_from_env()"
APPLICATION_FACTORY = "registry.app:create_app_from_env"


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


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, lowered by a cgroup v2 CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, int(quota) // int(period)))


def serve(settings: Settings) -> int:
    """Run the registry, one worker per CPU unless told otherwise."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    announce_generated_user(settings)
    check_access_settings(settings)
    workers = settings.workers or available_cpus()
    metrics_dir = None
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        metrics_dir = tempfile.mkdtemp(prefix="registry-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(
        f"registry listening on http://{host}:{settings.port} "
        f"({settings.server}, {workers} worker{'s' if workers > 1 else ''}, "
        f"data in {settings.data_dir})",
        flush=True,
    )
    try:
        if settings.server == "granian":
            return run_granian(settings, workers)
        return run_hypercorn(settings, host, workers)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def run_hypercorn(settings: Settings, host: str, workers: int) -> int:
    """The default server: hypercorn with uvloop."""
    from hypercorn.config import Config
    from hypercorn.run import run

    config = Config()
    config.application_path = APPLICATION
    config.bind = [f"{host}:{settings.port}"]
    config.worker_class = "uvloop"
    config.workers = 0 if workers == 1 else workers  # hypercorn's 0: serve in this process
    config.loglevel = settings.log_level.upper()
    config.errorlog = "-"
    config.include_server_header = False
    config.keep_alive_timeout = 75
    config.h11_max_incomplete_size = settings.limits.max_header_bytes
    return run(config)


def run_granian(settings: Settings, workers: int) -> int:
    """The optional server: granian (Rust HTTP/1.1), which sends blobs zero-copy by path."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

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
        # headers beyond the limit reach the app, which answers 431 with an OCI error document
        http1_settings=HTTP1Settings(
            max_buffer_size=max(8 * settings.limits.max_header_bytes, 408 * 1024)
        ),
        log_level=LogLevels(settings.log_level),
    ).serve()
    return 0


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
