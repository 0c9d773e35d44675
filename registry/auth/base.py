"""What access controllers share: the access a request needs, and who was granted it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Action = Literal["pull", "push", "delete"]


@dataclass(frozen=True, slots=True)
class Access:
    """One action on one repository (``repository`` None means the registry: ping, catalog)."""

    repository: str | None
    action: Action


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request."""

    subject: str  # user name, or "" for anonymous
    kind: Literal["user", "anonymous"] = "user"


ANONYMOUS = Identity("", "anonymous")


class AccessController(Protocol):
    """Decides whether a request's credentials grant the access it needs."""

    async def authorize(self, authorization: str | None, needed: list[Access]) -> Identity:
        """The caller's identity if all of ``needed`` is granted; else raise ``UNAUTHORIZED``
        (with a ``WWW-Authenticate`` challenge) or ``DENIED``."""
        ...
