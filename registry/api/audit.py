"""The audit log: one JSON line per write, per token issued and per denied request.

Written to the ``registry.audit`` logger (to stderr, or to ``REGISTRY_AUTH__AUDIT_LOG``).
A line says who (user, robot or OIDC subject with its issuer, repository and ref), what (the
endpoint), which repository, tag and digest, the status and the result. Writes are POST, PUT
and DELETE under ``/v2/`` (upload chunks, PATCH, are not logged one by one); denied means
403, 429, or 401 to a request that carried credentials (a bare 401 is the normal first step of
every login).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.auth.base import Identity
from registry.auth.credentials import basic_credentials

log = logging.getLogger("registry.audit")
WRITES = frozenset({"POST", "PUT", "DELETE"})
DENIED = frozenset({401, 403, 429})


def configure_audit_log(path: Path | None) -> None:
    """Send audit lines, unprefixed, to ``path`` (appended) or stderr; once per process."""
    if log.handlers:
        return
    handler: logging.Handler = (
        logging.FileHandler(path, encoding="utf-8") if path else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class AuditLog:
    """ASGI middleware that writes the audit line once the response status is known."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(("/v2/", "/auth/token")):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        seen: dict[str, Any] = {}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for key, value in message.get("headers", []):
                    if key.lower() == b"docker-content-digest":
                        seen["digest"] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._write(scope, state, seen, path)

    def _write(self, scope: Scope, state: dict[str, Any], seen: dict[str, Any], path: str) -> None:
        method: str = scope["method"]
        status: int = seen.get("status", 500)
        headers = dict(scope.get("headers", []))
        token = path.startswith("/auth/token")
        denied = status in (403, 429) or (status == 401 and (b"authorization" in headers or token))
        if not denied and not token and method not in WRITES:
            return
        identity = state.get("identity")
        params: dict[str, Any] = scope.get("path_params", {})
        endpoint = scope.get("endpoint")
        who = (
            identity.describe()
            if isinstance(identity, Identity)
            else {"kind": "unknown" if b"authorization" in headers else "anonymous"}
        )
        credentials = basic_credentials(headers.get(b"authorization", b"").decode("latin-1"))
        if who["kind"] == "unknown" and credentials is not None:
            who["attempted"] = credentials[0][:64]  # the name only, never the password
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "who": who,
            "client": (scope.get("client") or ("",))[0],
            "action": getattr(endpoint, "__name__", "token" if token else "unknown"),
            "method": method,
            "repository": params.get("name"),
            "status": status,
            "result": "denied" if denied else "ok" if status < 400 else "failed",
        }
        reference = str(params.get("reference", ""))
        digest = seen.get("digest") or params.get("digest")
        if reference.startswith("sha") and ":" in reference:
            digest = digest or reference
        elif reference:
            entry["tag"] = reference
        if digest is None and method == "PUT":
            query = scope.get("query_string", b"").decode("latin-1")
            digest = next((p[7:] for p in query.split("&") if p.startswith("digest=")), None)
        if digest:
            entry["digest"] = str(digest).replace("%3A", ":")[:200]
        if "granted" in state:
            entry["granted"] = state["granted"]
        log.info(orjson.dumps(entry).decode())
