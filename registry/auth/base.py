"""What access controllers share: the access a request needs, and who was granted it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from registry.oci.errors import ErrorCode, RegistryError

Action = Literal["pull", "push", "delete"]


@dataclass(frozen=True, slots=True)
class Access:
    """One action on one repository (``repository`` None means the registry: ping, catalog)."""

    repository: str | None
    action: Action


IdentityKind = Literal["user", "robot", "oidc", "anonymous"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request.

    For ``oidc`` identities, ``issuer`` is the token's issuer and ``claims`` the claims the
    policy and the audit log look at (``repository``, ``ref``, ...), as sorted pairs.
    """

    subject: str  # user or robot name, OIDC ``sub``, or "" for anonymous
    kind: IdentityKind = "user"
    issuer: str = ""
    claims: tuple[tuple[str, str], ...] = ()

    def claim(self, name: str) -> str | None:
        return next((value for key, value in self.claims if key == name), None)

    def describe(self) -> dict[str, object]:
        """For the audit log: who, with an OIDC identity's issuer and claims."""
        who: dict[str, object] = {"kind": self.kind, "subject": self.subject}
        if self.issuer:
            who["issuer"] = self.issuer
        who.update(self.claims)
        return who


ANONYMOUS = Identity("", "anonymous")


class AccessDenied(RegistryError):
    """``DENIED``: the caller is known but may not do this (carries who, for the audit log)."""

    def __init__(self, identity: Identity, access: Access, message: str | None = None) -> None:
        detail = {"repository": access.repository, "action": access.action}
        super().__init__(ErrorCode.DENIED, detail, message=message)
        self.identity = identity


class AccessController(Protocol):
    """Decides whether a request's credentials grant the access it needs."""

    async def authorize(
        self,
        authorization: str | None,
        needed: list[Access],
        *,
        client: str = "",
        base_url: str = "",
    ) -> Identity:
        """The caller's identity if all of ``needed`` is granted; else raise ``UNAUTHORIZED``
        (with a ``WWW-Authenticate`` challenge), ``DENIED`` or ``TOOMANYREQUESTS``.

        ``client`` is the peer address (for brute-force throttling), ``base_url`` the URL the
        request came to (``scheme://host``, for the token realm)."""
        ...

    def allows(self, identity: Identity, access: Access) -> bool:
        """Whether ``identity`` may do ``access`` (filters the catalog)."""
        ...
