"""Prometheus metrics: the instrumentator's HTTP series plus ``registry_*`` series.

Each app gets its own ``CollectorRegistry`` (tests build many apps in one process). With
several workers the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` so ``/metrics`` sums all of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics
from prometheus_fastapi_instrumentator.metrics import Info
from starlette.requests import ClientDisconnect
from starlette.types import Receive

# (route template suffix, method) -> (kind, operation)
_OPERATIONS = {
    ("/blobs/{digest}", "GET"): ("blob", "get"),
    ("/blobs/{digest}", "HEAD"): ("blob", "head"),
    ("/blobs/{digest}", "DELETE"): ("blob", "delete"),
    ("/blobs/uploads/", "POST"): ("blob", "upload"),
    ("/blobs/uploads/{upload_id}", "PUT"): ("blob", "upload"),
    ("/manifests/{reference}", "GET"): ("manifest", "get"),
    ("/manifests/{reference}", "HEAD"): ("manifest", "head"),
    ("/manifests/{reference}", "PUT"): ("manifest", "put"),
    ("/manifests/{reference}", "DELETE"): ("manifest", "delete"),
}


class RegistryMetrics:
    """The registry's own series, in one registry with the HTTP series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.bytes_received = Counter(
            "registry_bytes_received", "Blob bytes received by uploads.", registry=self.registry
        )
        self.bytes_sent = Counter(
            "registry_bytes_sent", "Blob bytes sent to clients.", registry=self.registry
        )
        self.uploads_in_progress = Gauge(
            "registry_uploads_in_progress",
            "Upload requests currently receiving data.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.operations = {
            kind: Counter(
                f"registry_{kind}_operations",
                f"{kind.capitalize()} operations by operation and result.",
                ["operation", "result"],
                registry=self.registry,
            )
            for kind in ("blob", "manifest")
        }

    def _count_operation(self, info: Info) -> None:
        handler = info.modified_handler
        for (suffix, method), (kind, operation) in _OPERATIONS.items():
            if info.method == method and handler.endswith(suffix):
                status = info.response.status_code if info.response is not None else 500
                result = "ok" if status < 400 else str(status)
                self.operations[kind].labels(operation, result).inc()
                return

    def install(self, app: FastAPI) -> None:
        """Instrument every route and serve ``/metrics``."""
        instrumentator = Instrumentator(
            registry=self.registry,
            excluded_handlers=["/metrics"],
            should_group_status_codes=False,
        )
        # Adding our own instrumentation replaces the defaults, so add them back explicitly.
        default = http_metrics.default(registry=self.registry)
        if default is not None:
            instrumentator.add(default)
        instrumentator.add(self._count_operation)
        instrumentator.instrument(app).expose(app, include_in_schema=False)

    async def received(self, receive: Receive) -> AsyncIterator[bytes]:
        """A request body straight from the ASGI messages, counting bytes and uploads.

        Reading ``receive`` directly, rather than through another generator layer, matters:
        a 1 GiB upload arrives in about 16,000 messages.
        """
        self.uploads_in_progress.inc()
        total = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk: bytes = message.get("body", b"")
                if chunk:
                    total += len(chunk)
                    yield chunk
                if not message.get("more_body", False):
                    return
        finally:
            self.bytes_received.inc(total)
            self.uploads_in_progress.dec()

    async def sent(self, body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """Pass a response body through, counting its bytes."""
        async for chunk in body:
            self.bytes_sent.inc(len(chunk))
            yield chunk
