"""Worker processes (hypercorn's or uvicorn's), forked from a supervisor that has already
imported the app.

hypercorn's own multi-worker mode spawns each worker as a fresh interpreter that imports
everything again (about 55 MiB each, nothing shared) and stops the whole server when one
worker dies. Forked after the imports, with ``gc.freeze()`` so the collector leaves the shared
pages alone, the workers share the interpreter's modules: two workers and their supervisor
measured 163 MiB (PSS, idle) spawned and 89 MiB forked (docs/performance.md). A worker that
dies is replaced; one that dies within its first seconds stops the server, since a fault at
start-up would only repeat.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.context import ForkContext
from multiprocessing.process import BaseProcess
from types import FrameType

from registry.process import preload_for_forked_workers

log = logging.getLogger("registry.supervisor")
START_GRACE = 5.0  # seconds: a worker that dies sooner stops the server
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_workers(
    serve: Callable[[], object],
    sockets: list[socket.socket],
    workers: int,
    graceful_timeout: float,
) -> int:
    """Run ``serve`` (one server process over the listening ``sockets``, bound already) in
    ``workers`` forked processes until SIGTERM or SIGINT; the exit code.

    Stopping works as in a single server process: each worker, on SIGTERM or SIGINT, stops
    accepting, lets requests finish for ``graceful_timeout`` and exits. The supervisor
    passes its own SIGTERM or SIGINT on as SIGTERM (a Ctrl+C reaches them all anyway), and
    kills whatever is left after the graceful timeout and a few seconds more.
    """
    preload_for_forked_workers()
    stop_signals: list[int] = []  # the handler only records; the loop below acts on it

    def stop(signal_number: int, frame: FrameType | None) -> None:
        stop_signals.append(signal_number)

    for signal_number in STOP_SIGNALS:
        signal.signal(signal_number, stop)
    context = multiprocessing.get_context("fork")
    started = {_start(context, serve): time.monotonic() for _ in range(workers)}
    exit_code = 0
    while not stop_signals and not exit_code:
        for ended in wait([process.sentinel for process in started], timeout=0.5):
            process = next(p for p in started if p.sentinel == ended)
            lived = time.monotonic() - started.pop(process)
            process.join()
            _forget_live_gauges(process.pid)
            if stop_signals:
                break
            if lived < START_GRACE:
                log.error("worker %s exited with %s at start-up", process.pid, process.exitcode)
                exit_code = 1
                break
            log.warning("worker %s exited with %s; starting another", process.pid, process.exitcode)
            started[_start(context, serve)] = time.monotonic()
    for process in started:
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + graceful_timeout + 5
    for process in started:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    for sock in sockets:
        sock.close()
    return exit_code


def _worker(serve: Callable[[], object]) -> None:
    """A worker: the default signal actions until the server sets its graceful handlers."""
    for signal_number in STOP_SIGNALS:
        signal.signal(signal_number, signal.SIG_DFL)
    serve()


def _start(context: ForkContext, serve: Callable[[], object]) -> BaseProcess:
    process = context.Process(target=_worker, args=(serve,), daemon=True)
    process.start()
    return process


def _forget_live_gauges(pid: int | None) -> None:
    """Drop a dead worker's share of the ``live*`` gauges (uploads in progress)."""
    if pid is not None and "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
