"""Request limits, applied before any routing: hostile or broken clients cannot exhaust us.

- Header size: requests whose header lines add up to more than ``max_header_bytes`` get 431.
- Slow bodies: a body that sends nothing for ``body_idle_seconds``, or averages less than
  ``body_min_rate`` bytes/s after its first 30 s, is cut off with 408, so a client trickling
  bytes cannot hold a worker (and an upload session's lock) forever.
- Upload sessions: one client address may hold at most ``max_uploads_per_client`` open
  sessions in this process; more get 429 ``TOOMANYREQUESTS``. A session stops counting when it
  is finished or cancelled, or after ten minutes without a request.

Manifest bodies have their own cap (``registry.oci.manifest.MAX_MANIFEST_SIZE``, 413).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import LimitSettings
from registry.oci.errors import ErrorCode, RegistryError

MIN_RATE_AFTER = 30.0  # seconds of body before the average rate is enforced
SESSION_IDLE = 600.0  # an upload session untouched this long stops counting against its client
_START = re.compile(r"/v2/.+/blobs/uploads/?")
_SESSION = re.compile(r"/v2/.+/blobs/uploads/([0-9A-Za-z-]{1,64})")


class BodyTimeout(RegistryError):
    """The client stopped sending its body, or sends it too slowly."""

    def __init__(self, why: str) -> None:
        super().__init__(ErrorCode.BLOB_UPLOAD_INVALID, why, message="request body timed out")
        self.status = 408


async def _send_error(send: Send, error: RegistryError) -> None:
    body = orjson.dumps(error.body())
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class UploadSessions:
    """Open upload sessions per client address (this process only), with idle expiry."""

    def __init__(self) -> None:
        self._sessions: dict[str, dict[str, float]] = defaultdict(dict)

    def count(self, client: str, now: float) -> int:
        sessions = self._sessions.get(client, {})
        for upload_id in [u for u, seen in sessions.items() if now - seen > SESSION_IDLE]:
            del sessions[upload_id]
        if not sessions:
            self._sessions.pop(client, None)
        return len(sessions)

    def opened(self, client: str, upload_id: str, now: float) -> None:
        self._sessions[client][upload_id] = now

    def touched(self, client: str, upload_id: str, now: float) -> None:
        sessions = self._sessions.get(client)
        if sessions is not None and upload_id in sessions:
            sessions[upload_id] = now

    def closed(self, client: str, upload_id: str) -> None:
        sessions = self._sessions.get(client)
        if sessions is not None:
            sessions.pop(upload_id, None)
            if not sessions:
                del self._sessions[client]


class LimitsMiddleware:
    """Enforces ``LimitSettings``; see the module docstring."""

    def __init__(self, app: ASGIApp, settings: LimitSettings) -> None:
        self.app = app
        self.settings = settings
        self.sessions = UploadSessions()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
        if header_bytes > self.settings.max_header_bytes:
            error = RegistryError(
                ErrorCode.UNSUPPORTED,
                {"limit": self.settings.max_header_bytes},
                message="request headers too large",
                status=431,
            )
            await _send_error(send, error)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        method, path = scope["method"], scope["path"]
        now = time.monotonic()
        cap = self.settings.max_uploads_per_client
        starting = method == "POST" and _START.fullmatch(path) is not None
        if starting and cap and self.sessions.count(client, now) >= cap:
            error = RegistryError(
                ErrorCode.TOOMANYREQUESTS,
                {"limit": cap, "scope": "open upload sessions per client"},
                headers={"Retry-After": "60"},
            )
            await _send_error(send, error)
            return
        session = _SESSION.fullmatch(path) if method in ("PATCH", "PUT", "DELETE") else None
        if session is not None:
            self.sessions.touched(client, session[1], now)

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if starting and status == 202:
                    for name, value in message.get("headers", ()):
                        if name.lower() == b"docker-upload-uuid":
                            self.sessions.opened(client, value.decode(), time.monotonic())
                elif session is not None and (status in (201, 204) or status == 404):
                    self.sessions.closed(client, session[1])
            await send(message)

        body = _WatchedBody(receive, self.settings.body_idle_seconds, self.settings.body_min_rate)
        try:
            await self.app(scope, body.receive, tracking_send)
        finally:
            body.close()


class _WatchedBody:
    """``receive`` under the body's limits, with one timer per request rather than per message.

    A 1 GiB upload is 4,000 messages; an ``asyncio.timeout`` around each took 8 % of the event
    loop's time. Instead each call notes when its wait began (the loop's clock, no system
    call), and a single timer, due ``idle`` seconds after the wait it knows of, either finds
    that wait still on and cancels it (turned into ``BodyTimeout``) or moves on to the current
    wait's deadline; it stops while nobody waits.
    """

    def __init__(self, receive: Receive, idle: float, min_rate: float) -> None:
        self._receive = receive
        self._idle = idle
        self._min_rate = min_rate
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Task[Any] | None = None
        self._since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False
        self._started: float | None = None
        self._received = 0
        self._done = False

    async def receive(self) -> Message:
        if self._done:  # after the body only a disconnect can come: wait as long as it takes
            return await self._receive()
        self._since = self._loop.time()
        self._waiter = asyncio.current_task(self._loop)
        if self._timer is None:
            self._timer = self._loop.call_at(self._since + self._idle, self._check)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if self._expired and self._waiter is not None and self._waiter.uncancel() == 0:
                raise BodyTimeout(f"no body bytes for {self._idle:g} s") from None
            raise
        finally:
            self._waiter = None
        if message["type"] == "http.request":
            self._done = not message.get("more_body", False)
            if self._done:
                self.close()
            now = self._loop.time()
            self._started = now if self._started is None else self._started
            self._received += len(message.get("body", b""))
            elapsed, rate = now - self._started, self._min_rate
            if rate and elapsed > MIN_RATE_AFTER and self._received < rate * elapsed:
                raise BodyTimeout(f"body slower than {rate} bytes/s")
        return message

    def _check(self) -> None:
        self._timer = None
        if self._waiter is None:
            return  # the next wait starts a timer again
        deadline = self._since + self._idle
        if self._loop.time() >= deadline - 0.001:  # timers fire to the millisecond
            self._expired = True
            self._waiter.cancel()
        else:
            self._timer = self._loop.call_at(deadline, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
