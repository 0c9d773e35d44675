"""hypercorn's worker processes, forked from a supervisor that has already imported the app.

hypercorn's own multi-worker mode spawns each worker as a fresh interpreter that imports
everything again (about 55 MiB each, nothing shared) and stops the whole server when one
worker dies. Forked after the imports, with ``gc.freeze()`` so the collector leaves the shared
pages alone, the workers share the interpreter's modules: two workers and their supervisor
measured 163 MiB (PSS, idle) spawned and 89 MiB forked (docs/performance.md). A worker that
dies is replaced; one that dies within its first seconds stops the server, since a fault at
start-up would only repeat.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from types import FrameType

from hypercorn.asyncio.run import uvloop_worker
from hypercorn.config import Config, Sockets

log = logging.getLogger("registry.supervisor")
START_GRACE = 5.0  # seconds: a worker that dies sooner stops the server
STOP_TIMEOUT = 30.0  # seconds the workers get to finish their requests on shutdown


def run_workers(config: Config, workers: int) -> int:
    """Serve with ``workers`` forked processes until SIGTERM or SIGINT; the exit code."""
    import registry.app  # noqa: F401  imported once here, shared by every worker

    sockets = config.create_sockets()
    context = multiprocessing.get_context("fork")
    shutdown = context.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):  # workers stop by the event only
        signal.signal(signal_number, signal.SIG_IGN)
    gc.freeze()
    started = {_start(context, config, sockets, shutdown): time.monotonic() for _ in range(workers)}

    def stop(signal_number: int, frame: FrameType | None) -> None:
        shutdown.set()

    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, stop)
    exit_code = 0
    while not shutdown.is_set():
        for ended in wait([process.sentinel for process in started], timeout=1.0):
            process = next(p for p in started if p.sentinel == ended)
            lived = time.monotonic() - started.pop(process)
            process.join()
            _forget_live_gauges(process.pid)
            if shutdown.is_set():
                break
            if lived < START_GRACE:
                log.error("worker %s exited with %s at start-up", process.pid, process.exitcode)
                shutdown.set()
                exit_code = 1
                break
            log.warning("worker %s exited with %s; starting another", process.pid, process.exitcode)
            started[_start(context, config, sockets, shutdown)] = time.monotonic()
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in started:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        sock.close()
    return exit_code


def _start(
    context: multiprocessing.context.ForkContext, config: Config, sockets: Sockets, shutdown: Event
) -> BaseProcess:
    process = context.Process(
        target=uvloop_worker,
        kwargs={"config": config, "sockets": sockets, "shutdown_event": shutdown},
        daemon=True,
    )
    process.start()
    return process


def _forget_live_gauges(pid: int | None) -> None:
    """Drop a dead worker's share of the ``live*`` gauges (uploads in progress)."""
    if pid is not None and "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
