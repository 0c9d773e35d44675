"""The token endpoint (``/auth/token``) of the Docker token protocol.

``GET`` with optional Basic credentials (``?service=&scope=&offline_token=true``) is what
``docker login`` and every client send first; ``POST`` with an OAuth2 form
(``grant_type=password`` or ``refresh_token``) is what docker sends once it holds a refresh
token. The answer grants the requested scopes cut down to what the policy allows (possibly
nothing), so a client learns "denied" from the registry's 403, as with distribution.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response

from registry.api.responses import json_response
from registry.auth.base import ANONYMOUS, Identity
from registry.auth.controller import PolicyAccessController
from registry.auth.policy import ALL_ACTIONS
from registry.auth.token import Scope, TokenAuthority, TokenError
from registry.oci.errors import ErrorCode, RegistryError
from registry.oci.reference import parse_name

router = APIRouter()
MAX_FORM_BYTES: Final = 64 * 1024
MAX_SCOPES: Final = 32


def parse_scopes(values: list[str]) -> list[Scope]:
    """``repository:<name>:<actions>`` and ``registry:catalog:*``; anything else is ignored."""
    scopes: list[Scope] = []
    for value in values:
        for text in value.split()[:MAX_SCOPES]:
            kind, _, rest = text.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = tuple(a for a in dict.fromkeys(actions.split(",")) if a)
            if kind == "registry" and name == "catalog" and "*" in wanted:
                scopes.append(Scope("registry", "catalog", ("*",)))
            elif kind == "repository" and wanted:
                try:
                    scopes.append(Scope("repository", parse_name(name), wanted))
                except RegistryError:
                    continue
    return scopes[:MAX_SCOPES]


def _controller(request: Request) -> tuple[PolicyAccessController, TokenAuthority]:
    access = request.app.state.access
    if not isinstance(access, PolicyAccessController) or access.tokens is None:
        raise RegistryError(ErrorCode.NOT_FOUND, "token authentication is not enabled")
    return access, access.tokens


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _grant(access: PolicyAccessController, identity: Identity, scopes: list[Scope]) -> list[Scope]:
    granted: list[Scope] = []
    for scope in scopes:
        if scope.type == "registry":
            if identity.kind != "anonymous":
                granted.append(scope)
            continue
        allowed = access.policy.actions(identity, scope.name)
        wanted = ALL_ACTIONS if "*" in scope.actions else scope.actions
        actions = tuple(a for a in ALL_ACTIONS if a in wanted and a in allowed)
        if actions:
            granted.append(Scope("repository", scope.name, actions))
    return granted


def _answer(
    request: Request,
    identity: Identity,
    scopes: list[Scope],
    service: str | None,
    refresh: bool,
) -> Response:
    access, tokens = _controller(request)
    if service is not None and service != tokens.service:
        raise RegistryError(ErrorCode.DENIED, {"service": service[:256]}, message="unknown service")
    granted = _grant(access, identity, scopes)
    request.state.identity = identity
    request.state.granted = " ".join(scope.text() for scope in granted)
    token = tokens.issue(identity, granted)
    body: dict[str, object] = {
        "token": token,
        "access_token": token,
        "expires_in": tokens.ttl,
        "issued_at": datetime.fromtimestamp(int(time.time()), UTC).isoformat(),
    }
    if refresh and identity.kind != "anonymous":
        body["refresh_token"] = tokens.issue_refresh(identity)
    response = json_response(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def _refused(access: PolicyAccessController) -> RegistryError:
    return RegistryError(
        ErrorCode.UNAUTHORIZED,
        headers={"WWW-Authenticate": f'Basic realm="{access.basic_realm}", charset="UTF-8"'},
    )


@router.get("/auth/token")
async def token_get(request: Request) -> Response:
    """A token for the requested scopes; Basic credentials (user, robot, ``oidc``) optional."""
    access, _ = _controller(request)
    authorization = request.headers.get("authorization")
    identity = ANONYMOUS
    if authorization is not None:
        signed_in = await access.authenticator.login(authorization, _client(request))
        if signed_in is None:
            raise _refused(access)
        identity = signed_in
    query = request.query_params
    scopes = parse_scopes(query.getlist("scope"))
    offline = query.get("offline_token", "").lower() == "true"
    return _answer(request, identity, scopes, query.get("service"), offline)


@router.post("/auth/token")
async def token_post(request: Request) -> Response:
    """The OAuth2 form: ``grant_type=password`` (username, password) or ``refresh_token``."""
    access, tokens = _controller(request)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise RegistryError(ErrorCode.UNSUPPORTED, "form too large", status=413)
    try:
        form = {k: v[0] for k, v in parse_qs(body.decode(), max_num_fields=64).items()}
    except (UnicodeDecodeError, ValueError):
        raise RegistryError(ErrorCode.UNSUPPORTED, "malformed form", status=400) from None
    grant_type = form.get("grant_type")
    client = _client(request)
    identity: Identity | None
    if grant_type == "password":
        access.authenticator.throttle.check(client)
        identity = await access.authenticator.login_password(
            form.get("username", ""), form.get("password", ""), client
        )
        refresh = form.get("access_type") == "offline"
    elif grant_type == "refresh_token":
        access.authenticator.throttle.check(client)
        try:
            identity = tokens.verify_refresh(form.get("refresh_token", ""))
        except TokenError as error:
            access.authenticator.refused(client, f"refresh token refused: {error}")
            identity = None
        if identity is not None and not access.authenticator.knows(identity):
            access.authenticator.refused(client, f"refresh token of unknown {identity.subject!r}")
            identity = None
        refresh = False
    else:
        raise RegistryError(
            ErrorCode.UNSUPPORTED, {"grant_type": (grant_type or "")[:64]}, status=400
        )
    if identity is None:
        raise _refused(access)
    return _answer(
        request, identity, parse_scopes([form.get("scope", "")]), form.get("service"), refresh
    )
