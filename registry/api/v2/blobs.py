"""Blobs: HEAD, GET (with Range), DELETE."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from registry.api.deps import Authorized, DigestParam, Metrics, RepoName, Services
from registry.oci.errors import ErrorCode, RegistryError
from registry.storage.driver import SendableFile

router = APIRouter(dependencies=[Authorized])
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
PATHSEND = "http.response.pathsend"
DROP_BEHIND = "registry.pathsend.drop_behind"
"""An extension of ours: the server drops a sent file's pages from the page cache behind the
send when the pathsend message has this key set (registry/hypercorn_sendfile.py)."""


class PathSendResponse(Response):
    """A whole file the server sends itself (ASGI ``pathsend``): granian reads it outside
    Python, hypercorn hands it to sendfile(2) (registry/hypercorn_sendfile.py)."""

    def __init__(self, file: SendableFile, headers: dict[str, str]) -> None:
        super().__init__(headers=headers, media_type="application/octet-stream")
        self.file = file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        message: dict[str, object] = {"type": PATHSEND, "path": self.file.path}
        if not self.file.keep_cached:
            message[DROP_BEHIND] = True
        await send(message)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) bytes a ``Range`` header asks for; None for the whole blob.

    A single range is honoured; several ranges or another unit are ignored (the whole blob is
    sent, as RFC 9110 allows); an unsatisfiable range raises 416.
    """
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None
    first_text, last_text = match.groups()
    if first_text == "" and last_text == "":
        return None
    if first_text == "":  # the last N bytes
        length = int(last_text)
        first, last = max(size - length, 0), size - 1
        if length == 0:
            first = size
    else:
        first = int(first_text)
        last = min(int(last_text), size - 1) if last_text else size - 1
    if first >= size or first > last:
        raise RegistryError(
            ErrorCode.RANGE_INVALID,
            {"range": header, "size": size},
            headers={"Content-Range": f"bytes */{size}"},
        )
    return first, last


@router.api_route("/v2/{name:path}/blobs/{digest}", methods=["GET", "HEAD"])
async def get_blob(
    request: Request, name: RepoName, digest: DigestParam, services: Services, metrics: Metrics
) -> Response:
    """The blob's bytes, whole or one range, streamed from storage (or a redirect to them)."""
    blob = await services.blobs.stat(name, digest)
    headers = {
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }
    span = byte_range(request.headers.get("range"), blob.size)
    first, last = span if span else (0, blob.size - 1)
    length = last - first + 1
    headers["Content-Length"] = str(length)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{blob.size}"
    if request.method == "HEAD" or length == 0:
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    if span is None and (url := await services.blobs.redirect_url(digest)):
        return RedirectResponse(
            url, status_code=307, headers={"Docker-Content-Digest": str(digest)}
        )
    extensions = request.scope.get("extensions") or {}
    if (
        span is None
        and PATHSEND in extensions
        and (file := services.blobs.sendable_file(digest, DROP_BEHIND in extensions))
    ):
        metrics.bytes_sent.inc(length)
        return PathSendResponse(file, headers)
    body = metrics.sent(services.blobs.read(digest, first, length))
    return StreamingResponse(body, status, headers, media_type="application/octet-stream")


@router.delete("/v2/{name:path}/blobs/{digest}", status_code=202)
async def delete_blob(
    request: Request, name: RepoName, digest: DigestParam, services: Services
) -> Response:
    """Unlink a blob from the repository."""
    if not request.app.state.settings.delete_enabled:
        raise RegistryError(ErrorCode.UNSUPPORTED, "deletes are disabled")
    await services.blobs.unlink(name, digest)
    return Response(status_code=202, headers={"Docker-Content-Digest": str(digest)})
