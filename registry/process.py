"""Set-up of the server processes: logging, allocator, modules imported ahead of requests."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import logging

from config import Settings

MIB = 1024 * 1024
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
BUFFER_MMAP_THRESHOLD = 8 * MIB  # blob read buffers (1 MiB) come from the heap, not mmap
BUFFER_TRIM_THRESHOLD = 6 * MIB  # free memory a heap keeps before giving it back
ARENAS = 2  # heaps shared by the pool threads (glibc's default: up to 8 per CPU)


def configure_logging(settings: Settings) -> None:
    """Log lines with time and level at ``REGISTRY_LOG_LEVEL``."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )


def import_first_request_modules() -> None:
    """Import now what a worker would otherwise import on its first requests: anyio's asyncio
    backend (behind every streamed response) and uvloop. Without this each worker's first blob
    GET took 17-31 ms instead of 2-4. anyio's module is private: where a release moves it,
    this does nothing rather than stop the server."""
    import uvloop  # noqa: F401

    with contextlib.suppress(ImportError):
        importlib.import_module("anyio._backends._asyncio")


def preload_for_forked_workers() -> None:
    """Import the app and what its first requests need, then ``gc.freeze()``: workers forked
    after this share those pages, and their collectors leave them untouched."""
    import registry.app  # noqa: F401

    import_first_request_modules()
    gc.freeze()


def keep_buffers_in_heap() -> bool:
    """Let glibc reuse freed blob-sized buffers instead of handing them back to the kernel.

    Blob reads allocate 1 MiB buffers in pool threads and free them on the event loop. By
    default glibc serves those with ``mmap``, or from a thread's heap that it trims as soon as
    about 2 MiB is free, so each new buffer faults in fresh zeroed pages: with 4 clients
    pulling, about a sixth of a worker's CPU (docs/performance.md). With these thresholds a
    freed buffer is reused; a heap keeps at most 6 MiB free, and the pool threads share two
    heaps (with one per thread, glibc's default, the memory kept free added about 20 MiB per
    server after a few pushes and pulls). False without glibc's mallopt.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = (
        (M_MMAP_THRESHOLD, BUFFER_MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, BUFFER_TRIM_THRESHOLD),
        (M_ARENA_MAX, ARENAS),
    )
    return all([bool(mallopt(parameter, value)) for parameter, value in settings])
