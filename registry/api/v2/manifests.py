"""Manifests: GET/HEAD by tag or digest, PUT, DELETE."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from registry.api.deps import Authorized, LookupReference, Reference, RepoName, Services
from registry.oci.errors import ErrorCode, RegistryError
from registry.oci.manifest import MAX_MANIFEST_SIZE
from registry.oci.reference import parse_tag

router = APIRouter(dependencies=[Authorized])


def _too_large() -> RegistryError:
    return RegistryError(
        ErrorCode.MANIFEST_INVALID, f"manifest is larger than {MAX_MANIFEST_SIZE} bytes", status=413
    )


async def _read_manifest_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_MANIFEST_SIZE:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_MANIFEST_SIZE:
            raise _too_large()
    return bytes(body)


@router.api_route("/v2/{name:path}/manifests/{reference}", methods=["GET", "HEAD"])
async def get_manifest(
    request: Request, name: RepoName, reference: LookupReference, services: Services
) -> Response:
    """The exact bytes pushed, with their media type and digest (404 for a malformed reference)."""
    stored = await services.manifests.get(name, reference)
    headers = {"Docker-Content-Digest": str(stored.digest), "ETag": f'"{stored.digest}"'}
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(stored.raw))
        return Response(headers=headers, media_type=stored.media_type)
    return Response(stored.raw, headers=headers, media_type=stored.media_type)


@router.put("/v2/{name:path}/manifests/{reference}", status_code=201)
async def put_manifest(
    request: Request, name: RepoName, reference: Reference, services: Services
) -> Response:
    """Validate and store a manifest; tag it if pushed by tag or with ``?tag=``."""
    raw = await _read_manifest_body(request)
    tags = tuple(parse_tag(tag) for tag in request.query_params.getlist("tag"))
    content_type = request.headers.get("content-type")
    manifest = await services.manifests.put(name, reference, raw, content_type, tags)
    digest = manifest.digest if isinstance(reference, str) else reference
    headers = {
        "Location": f"/v2/{name}/manifests/{digest}",
        "Docker-Content-Digest": str(digest),
        "Content-Length": "0",
    }
    if manifest.subject is not None:
        headers["OCI-Subject"] = str(manifest.subject.digest)
    response = Response(status_code=201, headers=headers)
    for tag in dict.fromkeys(tags):
        response.headers.append("OCI-Tag", tag)
    return response


@router.delete("/v2/{name:path}/manifests/{reference}", status_code=202)
async def delete_manifest(
    request: Request, name: RepoName, reference: Reference, services: Services
) -> Response:
    """Delete a tag, or a manifest (and the tags pointing at it) by digest."""
    if not request.app.state.settings.delete_enabled:
        raise RegistryError(ErrorCode.UNSUPPORTED, "deletes are disabled")
    await services.manifests.delete(name, reference)
    return Response(status_code=202)
