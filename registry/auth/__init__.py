"""Authentication and authorisation: who is calling, and may they do this."""

from registry.auth.base import ANONYMOUS, Access, AccessController, Action, Identity

__all__ = ["ANONYMOUS", "Access", "AccessController", "Action", "Identity"]
