"""A minimal asyncio load generator for small requests (wrk cannot do HEAD).

Each of ``connections`` keep-alive connections sends one request, reads the whole response
(no body for HEAD), checks the status and repeats, until ``seconds`` have passed or
``max_requests`` are done. Raw streams on uvloop keep the client cheap, so at a few thousand
requests per second the server, not the client, is what gets measured; ``bench`` runs the same
GET through wrk too and reports both, so the two load generators can be compared.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import uvloop


async def _connection(
    port: int,
    request: bytes,
    head: bool,
    deadline: float,
    budget: list[int],
    latencies: list[float],
    failures: list[str],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            try:
                header = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as closed:
                if closed.partial:
                    raise
                # the server ended a keep-alive connection (hypercorn: after 1,000 requests);
                # reconnect and send again, as wrk does
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                started = time.perf_counter()
                writer.write(request)
                header = await reader.readuntil(b"\r\n\r\n")
            status = int(header[9:12])
            length = 0
            for line in header.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length and not head:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not 200 <= status < 300:
                failures.append(header.split(b"\r\n", 1)[0].decode())
                return
    finally:
        writer.close()


async def _run(
    port: int, request: bytes, head: bool, connections: int, seconds: float, max_requests: int
) -> dict[str, float]:
    latencies: list[float] = []
    failures: list[str] = []
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _connection(port, request, head, deadline, budget, latencies, failures)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    assert not failures, f"non-2xx responses: {failures[:3]}"
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(cuts[49] * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
    }


def run(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    max_requests: int = 500_000,
) -> dict[str, float]:
    """Requests/s and p50/p99 latency (ms) of ``method path`` at ``connections`` concurrency."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run(port, request, method == "HEAD", connections, seconds, max_requests))
