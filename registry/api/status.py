"""Liveness and readiness, for load balancers and orchestrators (no authentication)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Response

from registry.api.deps import Services
from registry.api.responses import json_response
from registry.storage.driver import StorageError

router = APIRouter(prefix="/status", tags=["status"])
_PROBE = "_registry/readiness/probe-{pid}"


@router.get("/health")
async def health() -> Response:
    """The process is up and serving requests."""
    return json_response({"status": "ok"})


@router.get("/ready")
async def ready(services: Services) -> Response:
    """Storage is reachable and writable: a small file is written, read back and deleted."""
    path = _PROBE.format(pid=os.getpid())
    payload = os.urandom(16)
    try:
        await services.driver.put_content(path, payload)
        matches = await services.driver.get_content(path) == payload
        await services.driver.delete(path)
    except StorageError as error:
        return json_response({"status": "unavailable", "storage": str(error)}, status_code=503)
    if not matches:
        return json_response({"status": "unavailable", "storage": "read back differs"}, 503)
    return json_response({"status": "ready"})
