"""The machine's limits for this workload: hashing and the data folder's disk."""

from __future__ import annotations

import hashlib
import mmap
import os
import time

MIB = 1024 * 1024


def sha256_throughput(total: int = 1024 * MIB) -> float:
    """Single-core hashlib sha256 over 1 MiB chunks, bytes/s."""
    chunk = os.urandom(MIB)
    hasher = hashlib.sha256()
    start = time.perf_counter()
    for _ in range(total // MIB):
        hasher.update(chunk)
    return total / (time.perf_counter() - start)


def write_throughput(
    folder: str, total: int = 1024 * MIB, direct: bool = False, fsync_every: int = 0
) -> float:
    """Sequential write of a new file, fsynced, bytes/s (page cache or O_DIRECT).

    With ``fsync_every``, also fsynced after each such run of bytes, as a chunked push must
    before it answers each ``PATCH``: the most a durable chunked push can reach on this disk.
    """
    path = os.path.join(folder, f".bench-write-{os.getpid()}")
    buffer = mmap.mmap(-1, 4 * MIB)  # page-aligned, as O_DIRECT needs
    buffer.write(os.urandom(4 * MIB))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)
    start = time.perf_counter()
    fd = os.open(path, flags, 0o644)
    try:
        for block in range(1, total // (4 * MIB) + 1):
            os.write(fd, buffer)
            if fsync_every and block * 4 * MIB % fsync_every == 0:
                os.fsync(fd)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    os.unlink(path)
    return total / elapsed


def read_throughput(folder: str, total: int = 1024 * MIB) -> float:
    """Sequential read of a file just written (page cache), bytes/s."""
    path = os.path.join(folder, f".bench-read-{os.getpid()}")
    with open(path, "wb") as file:
        block = os.urandom(4 * MIB)
        for _ in range(total // (4 * MIB)):
            file.write(block)
    buffer = bytearray(4 * MIB)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as file:
        while file.readinto(buffer):
            pass
    elapsed = time.perf_counter() - start
    os.unlink(path)
    return total / elapsed


def measure(folder: str) -> dict[str, float]:
    return {
        "sha256_single_core": sha256_throughput(),
        "disk_write_page_cache_fsync": write_throughput(folder),
        "disk_write_o_direct_fsync": write_throughput(folder, direct=True),
        "disk_write_o_direct_fsync_every_16MiB": write_throughput(
            folder, direct=True, fsync_every=16 * MIB
        ),
        "disk_read_page_cache": read_throughput(folder),
    }
