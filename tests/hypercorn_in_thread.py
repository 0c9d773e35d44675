"""hypercorn as the registry runs it (uvloop, the registry's patches), in a thread of the test
process, so that a test can count what the server process does (calls, descriptors)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvloop
from hypercorn.asyncio import serve
from hypercorn.config import Config

from registry import hypercorn_request_body, hypercorn_sendfile
from registry.__main__ import read_sockets_in_larger_pieces
from tests.e2e.conftest import free_port

App = Callable[..., Any]


@contextmanager
def hypercorn_serving(app: App) -> Iterator[str]:
    """hypercorn patched as the registry patches it, on uvloop in a thread; its base URL."""
    hypercorn_request_body.install()
    hypercorn_sendfile.install()
    read_sockets_in_larger_pieces()
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 1
    config.errorlog = logging.getLogger("hypercorn.error")  # as the registry sets it
    loop = uvloop.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve(app, config, shutdown_trigger=stop.wait))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "hypercorn did not start"
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


async def answer_lifespan(receive: Any, send: Any) -> None:
    """Play a test app's part in the ASGI lifespan protocol: nothing to start or stop."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


def connect(url: str) -> socket.socket:
    """A raw TCP connection to the server at ``url``."""
    return socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
