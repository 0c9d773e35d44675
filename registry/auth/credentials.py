"""Checking credentials given as HTTP Basic: passwords of users and robots, or an OIDC ID token.

Passwords go through ``PasswordChecker.authenticate`` (bcrypt, with its cache of verified
headers). The user name ``oidc`` means the password is an ID token from a trusted issuer
(``docker login -u oidc -p "$ID_TOKEN"``). Every failure is counted by the login throttle.
"""

from __future__ import annotations

import base64
import binascii
import logging

from registry.auth.base import Identity
from registry.auth.basic import PasswordChecker
from registry.auth.oidc import OidcVerifier
from registry.auth.policy import Policy
from registry.auth.policyfile import OIDC_USERNAME
from registry.auth.throttle import LoginThrottle
from registry.auth.token import TokenError

log = logging.getLogger("registry.auth")


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """``(user, password)`` from a ``Basic`` header, or None if it is not one."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class Authenticator:
    """Who a ``Basic`` header belongs to, with failed attempts throttled per client."""

    def __init__(
        self,
        policy: Policy,
        passwords: PasswordChecker,
        oidc: OidcVerifier | None,
        throttle: LoginThrottle,
    ) -> None:
        self.policy = policy
        self.passwords = passwords
        self.oidc = oidc
        self.throttle = throttle

    async def login(self, authorization: str, client: str) -> Identity | None:
        """The identity, or None (counted as a failure); ``TOOMANYREQUESTS`` when locked out."""
        self.throttle.check(client)
        credentials = basic_credentials(authorization)
        if credentials is None:
            self.refused(client, "not Basic credentials")
            return None
        return await self._login(*credentials, authorization, client)

    async def login_password(self, user: str, password: str, client: str) -> Identity | None:
        """As ``login``, for credentials from a form (the OAuth2 password grant)."""
        self.throttle.check(client)
        header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return await self._login(user, password, header, client)

    async def _login(
        self, user: str, password: str, authorization: str, client: str
    ) -> Identity | None:
        if user == OIDC_USERNAME and self.oidc is not None:
            try:
                return await self.oidc.verify(password)
            except TokenError as error:
                self.refused(client, f"OIDC token refused: {error}")
                return None
        name = await self.passwords.authenticate(authorization)
        if name is None:
            self.refused(client, f"wrong password for {user[:64]!r}")
            return None
        return self.policy.kind_of(name)

    def knows(self, identity: Identity) -> bool:
        """Whether a refresh token's identity still exists (account or trusted issuer)."""
        if identity.kind == "oidc":
            return self.oidc is not None and identity.issuer in self.oidc.issuers
        name = identity.subject
        return name in self.passwords.users or name in self.passwords.plain_users

    def refused(self, client: str, reason: str) -> None:
        """Log why a login failed and count it against the client."""
        log.info("login from %s refused: %s", client or "?", reason)
        self.throttle.failed(client)
