"""Repository names, tags and references, by the distribution spec's grammar."""

from __future__ import annotations

import re
from typing import Final

from registry.oci.digest import Digest
from registry.oci.errors import ErrorCode, RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME: Final = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG: Final = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
NAME_MAX_LENGTH: Final = 255


def parse_name(text: str) -> str:
    """Validate a repository name (``a/b/c``), raising ``NAME_INVALID``."""
    if len(text) > NAME_MAX_LENGTH:
        raise RegistryError(
            ErrorCode.NAME_INVALID, f"repository name longer than {NAME_MAX_LENGTH} characters"
        )
    if not _NAME.fullmatch(text):
        raise RegistryError(ErrorCode.NAME_INVALID, f"invalid repository name: {text!r}")
    return text


def parse_tag(text: str) -> str:
    """Validate a tag, raising ``TAG_INVALID``."""
    if not _TAG.fullmatch(text):
        raise RegistryError(ErrorCode.TAG_INVALID, f"invalid tag: {text[:256]!r}")
    return text


def is_digest(reference: str) -> bool:
    """Whether a manifest reference names a digest rather than a tag."""
    return ":" in reference


def parse_reference(text: str) -> str | Digest:
    """A manifest reference: a ``Digest`` if it has a colon, else a validated tag."""
    return Digest.parse(text) if is_digest(text) else parse_tag(text)
