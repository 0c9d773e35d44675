"""OIDC federation: trusted issuers' ID tokens (a CI job's identity) as registry identities.

A token is accepted when its issuer is configured, its ``alg`` is one the issuer is trusted
for (never ``none`` or HMAC), its signature verifies with a key from the issuer's JWKS, its
``aud`` is the configured audience, it is within ``nbf``/``exp``, and at least one of the
issuer's rules has all its claim conditions met. The JWKS is found through the issuer's
discovery document (or ``jwks_uri``), fetched over HTTPS, cached for an hour and fetched again
when a token names an unknown ``kid`` (at most every ``REFETCH_SECONDS``). Why a token was
refused goes to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import jwt

from registry.auth.base import Identity
from registry.auth.policy import claim_text, conditions_met
from registry.auth.policyfile import CLAIM_REFERENCE, OidcIssuer
from registry.auth.token import TokenError

log = logging.getLogger("registry.auth.oidc")

JWKS_TTL_SECONDS = 3600.0
REFETCH_SECONDS = 30.0
LEEWAY_SECONDS = 30
MAX_TOKEN_LENGTH = 16_384
MAX_DOCUMENT_BYTES = 1 << 20
# Claims kept on the identity (for the audit log) besides those the rules look at.
DESCRIBING_CLAIMS = (
    "repository",
    "repository_owner_id",
    "ref",
    "workflow_ref",
    "environment",
    "actor",
    "run_id",
)
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC"}


@dataclass
class _KeySet:
    keys: dict[str, Any] = field(default_factory=dict)  # kid → public key
    fetched: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class OidcVerifier:
    """Verifies ID tokens from the configured issuers."""

    def __init__(
        self,
        issuers: list[OidcIssuer],
        allow_http: bool = False,
        client: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self.issuers = {issuer.issuer: issuer for issuer in issuers}
        self.allow_http = allow_http
        for url in self.issuers:
            self._check_url(url)
        self._make_client = client or (
            lambda: httpx.AsyncClient(timeout=10, follow_redirects=False)
        )
        self._client: httpx.AsyncClient | None = None  # made on first use (an SSL context)
        self._key_sets: dict[str, _KeySet] = {}

    def _check_url(self, url: str) -> None:
        if not (url.startswith("https://") or (self.allow_http and url.startswith("http://"))):
            raise ValueError(f"OIDC URLs must use HTTPS: {url}")

    async def _get_json(self, url: str) -> dict[str, Any]:
        self._check_url(url)
        if self._client is None:
            self._client = self._make_client()
        response = await self._client.get(url, headers={"Accept": "application/json"})
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            raise TokenError(f"{url} answered {response.status_code}")
        try:
            document = json.loads(response.content)
        except ValueError:
            raise TokenError(f"{url} did not return JSON") from None
        if not isinstance(document, dict):
            raise TokenError(f"{url} did not return a JSON object")
        return document

    async def _fetch_keys(self, issuer: OidcIssuer) -> dict[str, Any]:
        jwks_uri = issuer.jwks_uri
        if jwks_uri is None:
            discovery = await self._get_json(f"{issuer.issuer}/.well-known/openid-configuration")
            if discovery.get("issuer") != issuer.issuer or not isinstance(
                discovery.get("jwks_uri"), str
            ):
                raise TokenError(f"discovery document of {issuer.issuer} is not for it")
            jwks_uri = discovery["jwks_uri"]
        document = await self._get_json(jwks_uri)
        keys: dict[str, Any] = {}
        for entry in document.get("keys", []):
            if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC"):
                continue  # symmetric ("oct") keys are never trusted
            if entry.get("use", "sig") != "sig":
                continue
            try:
                keys[str(entry.get("kid", ""))] = (entry["kty"], jwt.PyJWK(entry).key)
            except (jwt.PyJWKError, KeyError, ValueError):
                log.warning("skipping an unusable key in the JWKS of %s", issuer.issuer)
        return keys

    async def _key(self, issuer: OidcIssuer, kid: str) -> tuple[str, Any]:
        key_set = self._key_sets.setdefault(issuer.issuer, _KeySet())
        async with key_set.lock:
            age = time.monotonic() - key_set.fetched
            if age > JWKS_TTL_SECONDS or (kid not in key_set.keys and age > REFETCH_SECONDS):
                try:
                    key_set.keys = await self._fetch_keys(issuer)
                except httpx.HTTPError as error:
                    raise TokenError(f"cannot fetch the JWKS of {issuer.issuer}: {error}") from None
                key_set.fetched = time.monotonic()
        found = key_set.keys.get(kid)
        if found is None:
            raise TokenError(f"unknown key id {kid!r} for {issuer.issuer}")
        return cast(tuple[str, Any], found)

    async def verify(self, token: str) -> Identity:
        """The identity of a valid, trusted ID token; ``TokenError`` with the reason otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("token too long")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as error:
            raise TokenError(f"not a JWT: {error}") from None
        issuer = self.issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise TokenError(f"untrusted issuer {str(unverified.get('iss'))[:200]!r}")
        algorithm = header.get("alg")
        if algorithm not in issuer.algorithms:
            raise TokenError(f"algorithm {str(algorithm)[:20]!r} not accepted from {issuer.issuer}")
        key_type, key = await self._key(issuer, str(header.get("kid", "")))
        if _KEY_TYPES[algorithm[:2]] != key_type:
            raise TokenError(f"algorithm {algorithm} does not fit a {key_type} key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise TokenError(f"{type(error).__name__}: {error}") from None
        texts = {name: text for name, value in claims.items() if (text := claim_text(value))}
        if not any(conditions_met(rule.conditions, texts) for rule in issuer.rules):
            raise TokenError(
                f"no rule of {issuer.issuer} matches sub={texts.get('sub', '')[:200]!r}"
            )
        wanted = {name for rule in issuer.rules for name in rule.conditions}
        wanted.update(
            name
            for rule in issuer.rules
            for pattern in rule.repositories
            for name in CLAIM_REFERENCE.findall(pattern)
        )
        wanted.update(DESCRIBING_CLAIMS)
        kept = tuple(sorted((name, texts[name][:512]) for name in wanted if name in texts))
        return Identity(texts.get("sub", "")[:512], "oidc", issuer.issuer, kept)
