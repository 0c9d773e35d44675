"""The access controller of both modes: credentials → identity → policy decision.

``basic`` mode takes Basic credentials on every request and challenges with ``Basic``.
``token`` mode challenges with ``Bearer realm=".../auth/token",service=...,scope=...`` (the
Docker token protocol) and accepts the tokens its token endpoint signed; Basic credentials are
still accepted on the API itself, for simple clients such as curl.

Not authenticated (or a token that lacks an access the policy would grant) → 401 with a
challenge; authenticated but not allowed → 403 ``DENIED``.
"""

from __future__ import annotations

import logging
from typing import Literal

from registry.auth.base import ANONYMOUS, Access, AccessDenied, Action, Identity
from registry.auth.credentials import Authenticator
from registry.auth.policy import Policy
from registry.auth.token import TokenAuthority, TokenError
from registry.oci.errors import ErrorCode, RegistryError

log = logging.getLogger("registry.auth")
_ORDER: tuple[Action, ...] = ("pull", "push", "delete")


def scope_text(needed: list[Access]) -> str:
    """``repository:<name>:pull,push ...`` for the repositories in ``needed`` (pull always)."""
    wanted: dict[str, set[Action]] = {}
    for access in needed:
        if access.repository is not None:
            wanted.setdefault(access.repository, {"pull"}).add(access.action)
    return " ".join(
        f"repository:{name}:{','.join(a for a in _ORDER if a in actions)}"
        for name, actions in wanted.items()
    )


class PolicyAccessController:
    """Authenticates with the ``Authenticator`` or a registry token, authorises by ``Policy``."""

    def __init__(
        self,
        policy: Policy,
        authenticator: Authenticator,
        mode: Literal["basic", "token"] = "basic",
        tokens: TokenAuthority | None = None,
        basic_realm: str = "Registry",
        token_realm: str | None = None,
    ) -> None:
        if mode == "token" and tokens is None:
            raise ValueError("token mode needs a token authority")
        self.policy = policy
        self.authenticator = authenticator
        self.mode = mode
        self.tokens = tokens
        self.basic_realm = basic_realm
        self.token_realm = token_realm

    def realm(self, base_url: str) -> str:
        return self.token_realm or f"{base_url.rstrip('/')}/auth/token"

    def challenge(
        self, needed: list[Access], base_url: str, error: str | None = None
    ) -> RegistryError:
        if self.tokens is None or self.mode == "basic":
            header = f'Basic realm="{self.basic_realm}", charset="UTF-8"'
        else:
            header = f'Bearer realm="{self.realm(base_url)}",service="{self.tokens.service}"'
            scope = scope_text(needed)
            if scope:
                header += f',scope="{scope}"'
            if error:
                header += f',error="{error}"'
        return RegistryError(ErrorCode.UNAUTHORIZED, headers={"WWW-Authenticate": header})

    def allows(self, identity: Identity, access: Access) -> bool:
        return self.policy.allows(identity, access)

    def _check(self, identity: Identity, needed: list[Access], base_url: str) -> Identity:
        for access in needed:
            if not self.policy.allows(identity, access):
                if identity.kind == "anonymous":
                    raise self.challenge(needed, base_url)
                raise AccessDenied(identity, access)
        return identity

    async def authorize(
        self,
        authorization: str | None,
        needed: list[Access],
        *,
        client: str = "",
        base_url: str = "",
    ) -> Identity:
        if authorization is None:
            if needed and all(a.repository is not None for a in needed):
                return self._check(ANONYMOUS, needed, base_url)
            raise self.challenge(needed, base_url)
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and self.tokens is not None and self.mode == "token":
            try:
                verified = self.tokens.verify(credentials.strip())
            except TokenError as error:
                log.info("bearer token from %s refused: %s", client or "?", error)
                raise self.challenge(needed, base_url, "invalid_token") from None
            for access in needed:
                granted = (
                    verified.registry_access or verified.identity.kind != "anonymous"
                    if access.repository is None
                    else access.action in verified.access.get(access.repository, ())
                )
                if not granted:
                    if verified.identity.kind == "anonymous" or self.policy.allows(
                        verified.identity, access
                    ):
                        raise self.challenge(needed, base_url, "insufficient_scope")
                    raise AccessDenied(verified.identity, access)
            return verified.identity
        identity = await self.authenticator.login(authorization, client)
        if identity is None:
            raise self.challenge(needed, base_url)
        return self._check(identity, needed, base_url)
