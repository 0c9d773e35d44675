"""Blob uploads: start (or mount, or push in one request), PATCH chunks, status, finish, cancel."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response

from registry.api.deps import Authorized, Metrics, RepoName, Services
from registry.oci.digest import SUPPORTED_ALGORITHMS, Digest
from registry.oci.errors import ErrorCode, RegistryError
from registry.oci.reference import parse_name
from registry.services.uploads import Upload, upload_location, upload_range

router = APIRouter(dependencies=[Authorized])
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?")


def _accepted(upload: Upload, status: int = 202) -> Response:
    return Response(
        status_code=status,
        headers={
            "Location": upload_location(upload),
            "Range": upload_range(upload.offset),
            "Docker-Upload-UUID": upload.id,
            "Content-Length": "0",
        },
    )


def _created(name: str, digest: Digest) -> Response:
    return Response(
        status_code=201,
        headers={
            "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": str(digest),
            "Content-Length": "0",
        },
    )


def _chunk_span(request: Request) -> tuple[int | None, int | None]:
    """Where a chunk starts (from ``Content-Range``) and how long it is, when the client says."""
    header = request.headers.get("content-range")
    declared = request.headers.get("content-length")
    length = int(declared) if declared and declared.isdigit() else None
    if header is None:
        return None, length
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None or int(match[2]) < int(match[1]):
        raise RegistryError(ErrorCode.RANGE_INVALID, {"content-range": header[:64]})
    start, span = int(match[1]), int(match[2]) - int(match[1]) + 1
    if length is not None and length != span:
        raise RegistryError(
            ErrorCode.RANGE_INVALID,
            f"Content-Range covers {span} bytes, Content-Length is {length}",
        )
    return start, span


def _required_digest(request: Request) -> Digest:
    text = request.query_params.get("digest")
    if not text:
        raise RegistryError(ErrorCode.DIGEST_INVALID, "the digest query parameter is required")
    return Digest.parse(text)


@router.post("/v2/{name:path}/blobs/uploads/")
async def start_upload(
    request: Request, name: RepoName, services: Services, metrics: Metrics
) -> Response:
    """Mount a blob from another repository, take a whole blob, or open an upload session."""
    query = request.query_params
    if (mount := query.get("mount")) is not None and (source := query.get("from")):
        digest = Digest.parse(mount)
        if await services.blobs.mount(name, digest, parse_name(source)):
            return _created(name, digest)
    algorithm = query.get("digest-algorithm", "sha256")
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise RegistryError(ErrorCode.DIGEST_INVALID, f"unsupported algorithm: {algorithm[:32]}")
    if "digest" in query:
        digest = _required_digest(request)
        upload = await services.uploads.start(name, digest.algorithm)
        _, length = _chunk_span(request)
        body = metrics.received(request.receive)
        await services.uploads.complete(upload, digest, body, length=length)
        return _created(name, digest)
    return _accepted(await services.uploads.start(name, algorithm))


@router.patch("/v2/{name:path}/blobs/uploads/{upload_id}")
async def append_chunk(
    request: Request, name: RepoName, upload_id: str, services: Services, metrics: Metrics
) -> Response:
    """Append a chunk (or a whole streamed body); ``Content-Range`` must continue the upload."""
    upload = await services.uploads.get(name, upload_id)
    start, length = _chunk_span(request)
    body = metrics.received(request.receive)
    upload, _ = await services.uploads.append(upload, body, start, length)
    return _accepted(upload)


@router.get("/v2/{name:path}/blobs/uploads/{upload_id}")
async def upload_status(name: RepoName, upload_id: str, services: Services) -> Response:
    """How many bytes the session holds."""
    return _accepted(await services.uploads.get(name, upload_id), status=204)


@router.put("/v2/{name:path}/blobs/uploads/{upload_id}")
async def finish_upload(
    request: Request, name: RepoName, upload_id: str, services: Services, metrics: Metrics
) -> Response:
    """Take an optional last chunk, verify the digest and publish the blob."""
    digest = _required_digest(request)
    upload = await services.uploads.get(name, upload_id)
    start, length = _chunk_span(request)
    body = metrics.received(request.receive)
    await services.uploads.complete(upload, digest, body, start, length)
    return _created(name, digest)


@router.delete("/v2/{name:path}/blobs/uploads/{upload_id}", status_code=204)
async def cancel_upload(name: RepoName, upload_id: str, services: Services) -> Response:
    """Abandon the session and its bytes."""
    await services.uploads.cancel(await services.uploads.get(name, upload_id))
    return Response(status_code=204)
