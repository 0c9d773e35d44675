"""Registry tokens: signed JWTs listing granted access, issued by the token endpoint and
checked by the registry itself.

An access token carries ``iss``, ``sub``, ``aud`` (the service), ``exp``, ``nbf``, ``iat``,
``jti`` and distribution's ``access`` claim (``[{"type", "name", "actions"}]``), plus who the
subject is (``kind``; for OIDC identities their issuer and claims) so that the registry can
tell "not allowed" from "ask for a wider token". A refresh token (``docker login`` keeps one)
names the same identity with ``use: refresh`` and no access; it is exchanged for access tokens
after the policy is evaluated again. Verification pins the one algorithm of our key, so
``alg: none`` and HS256-with-the-public-key confusion are refused.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

import jwt

from registry.auth.base import Action, Identity, IdentityKind
from registry.auth.keys import SigningKey

LEEWAY_SECONDS = 10
OIDC_REFRESH_SECONDS = 3600
TokenUse = Literal["access", "refresh"]
_KINDS = ("user", "robot", "oidc", "anonymous")
_ACTIONS = ("pull", "push", "delete")


class TokenError(Exception):
    """A token that must not be accepted; the message says why (for the log only)."""


@dataclass(frozen=True, slots=True)
class Scope:
    """One entry of the ``access`` claim: ``repository`` (or ``registry``) name and actions."""

    type: str
    name: str
    actions: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}

    def text(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    identity: Identity
    access: dict[str, frozenset[Action]]  # repository name → granted actions
    registry_access: bool  # a ``registry:catalog:*`` grant


class TokenAuthority:
    """Signs and verifies this registry's tokens."""

    def __init__(
        self, key: SigningKey, issuer: str, service: str, ttl: int, refresh_ttl: int
    ) -> None:
        self.key = key
        self.issuer = issuer
        self.service = service
        self.ttl = ttl
        self.refresh_ttl = refresh_ttl

    def _sign(self, identity: Identity, use: TokenUse, ttl: int, extra: dict[str, Any]) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": identity.subject,
            "aud": self.service,
            "exp": now + ttl,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "use": use,
            "kind": identity.kind,
            **extra,
        }
        if identity.kind == "oidc":
            claims["oidc_iss"] = identity.issuer
            claims["oidc_claims"] = dict(identity.claims)
        return jwt.encode(
            claims, self.key.private, algorithm=self.key.algorithm, headers={"kid": self.key.kid}
        )

    def issue(self, identity: Identity, scopes: list[Scope]) -> str:
        """An access token granting ``scopes`` (already cut down to what the policy allows)."""
        return self._sign(identity, "access", self.ttl, {"access": [s.claim() for s in scopes]})

    def issue_refresh(self, identity: Identity) -> str:
        """A refresh token; an OIDC identity's lives at most ``OIDC_REFRESH_SECONDS``, since
        the ID token it came from was meant to live minutes."""
        ttl = min(self.refresh_ttl, OIDC_REFRESH_SECONDS) if identity.kind == "oidc" else None
        return self._sign(identity, "refresh", ttl or self.refresh_ttl, {})

    def _decode(self, token: str, use: TokenUse) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key.public,
                algorithms=[self.key.algorithm],
                audience=self.service,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise TokenError(f"{type(error).__name__}: {error}") from None
        if claims.get("use") != use:
            raise TokenError(f"not an {use} token")
        if claims.get("kind") not in _KINDS or not isinstance(claims["sub"], str):
            raise TokenError("unknown subject kind")
        return claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        kind = cast(IdentityKind, claims["kind"])
        if kind != "oidc":
            return Identity(claims["sub"], kind)
        oidc_claims = claims.get("oidc_claims")
        if not isinstance(oidc_claims, dict) or not isinstance(claims.get("oidc_iss"), str):
            raise TokenError("OIDC identity without its issuer or claims")
        pairs = tuple(sorted((str(k), str(v)) for k, v in oidc_claims.items()))
        return Identity(claims["sub"], "oidc", claims["oidc_iss"], pairs)

    def verify(self, token: str) -> VerifiedToken:
        """The identity and grants of a valid access token; ``TokenError`` otherwise."""
        claims = self._decode(token, "access")
        access: dict[str, set[Action]] = {}
        registry_access = False
        entries = claims.get("access")
        if not isinstance(entries, list):
            raise TokenError("no access claim")
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("actions"), list):
                raise TokenError("malformed access claim")
            name, actions = entry.get("name"), entry["actions"]
            if entry.get("type") == "repository" and isinstance(name, str):
                access.setdefault(name, set()).update(
                    cast(Action, a) for a in actions if a in _ACTIONS
                )
            elif entry.get("type") == "registry" and name == "catalog" and "*" in actions:
                registry_access = True
        frozen = {name: frozenset(actions) for name, actions in access.items()}
        return VerifiedToken(self._identity(claims), frozen, registry_access)

    def verify_refresh(self, token: str) -> Identity:
        return self._identity(self._decode(token, "refresh"))
