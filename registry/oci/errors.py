"""OCI distribution error codes and the one exception that carries them.

Every failure the registry reports is a ``RegistryError``; the HTTP layer turns it into
``{"errors": [{"code", "message", "detail"}]}`` with the status the code prescribes.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(Enum):
    """A distribution-spec error code (plus distribution's extras) with its HTTP status."""

    BLOB_UNKNOWN = ("blob unknown to registry", 404)
    BLOB_UPLOAD_INVALID = ("blob upload invalid", 400)
    BLOB_UPLOAD_UNKNOWN = ("blob upload unknown to registry", 404)
    DIGEST_INVALID = ("provided digest did not match uploaded content", 400)
    MANIFEST_BLOB_UNKNOWN = ("manifest references a manifest or blob unknown to registry", 404)
    MANIFEST_INVALID = ("manifest invalid", 400)
    MANIFEST_UNKNOWN = ("manifest unknown to registry", 404)
    NAME_INVALID = ("invalid repository name", 400)
    NAME_UNKNOWN = ("repository name not known to registry", 404)
    SIZE_INVALID = ("provided length did not match content length", 400)
    TAG_INVALID = ("invalid tag", 400)
    UNAUTHORIZED = ("authentication required", 401)
    DENIED = ("requested access to the resource is denied", 403)
    UNSUPPORTED = ("the operation is unsupported", 405)
    TOOMANYREQUESTS = ("too many requests", 429)
    # Not in the spec's table, but sent by distribution and understood by clients.
    RANGE_INVALID = ("invalid content range", 416)
    PAGINATION_NUMBER_INVALID = ("invalid number of results requested", 400)
    NOT_FOUND = ("not found", 404)
    UNAVAILABLE = ("service unavailable", 503)
    UNKNOWN = ("unknown error", 500)

    def __init__(self, message: str, status: int) -> None:
        self.message = message
        self.status = status


class RegistryError(Exception):
    """A failure to report to the client as an OCI error."""

    def __init__(
        self,
        code: ErrorCode,
        detail: Any = None,
        *,
        message: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or code.message)
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.status = status or code.status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON document the spec defines for errors."""
        error: dict[str, Any] = {"code": self.code.name, "message": self.message}
        error["detail"] = self.detail if self.detail is not None else {}
        return {"errors": [error]}
