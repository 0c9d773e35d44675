"""Request dependencies: validated path parameters, the services, and authorisation.

All are ``async def`` although most never await: FastAPI runs a plain ``def`` dependency in a
thread pool, which cost about a fifth of a small request's time.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, Request

from registry.auth.base import Access, AccessController, AccessDenied, Action, Identity
from registry.metrics import RegistryMetrics
from registry.oci.digest import Digest
from registry.oci.errors import ErrorCode, RegistryError
from registry.oci.reference import parse_name, parse_reference
from registry.services import RegistryServices

# The access a request needs follows from its method alone.
METHOD_ACTIONS: Final[dict[str, Action]] = {
    "GET": "pull",
    "HEAD": "pull",
    "POST": "push",
    "PUT": "push",
    "PATCH": "push",
    "DELETE": "delete",
}


async def get_services(request: Request) -> RegistryServices:
    services: RegistryServices = request.app.state.services
    return services


async def get_metrics(request: Request) -> RegistryMetrics:
    metrics: RegistryMetrics = request.app.state.metrics
    return metrics


async def repository_name(name: str) -> str:
    return parse_name(name)


async def digest_parameter(digest: str) -> Digest:
    return Digest.parse(digest)


async def reference_parameter(reference: str) -> str | Digest:
    return parse_reference(reference)


async def lookup_reference_parameter(reference: str) -> str | Digest:
    """A reference to look up: one that cannot be valid names no manifest, so 404 (not 400)."""
    try:
        return parse_reference(reference)
    except RegistryError as error:
        raise RegistryError(
            ErrorCode.MANIFEST_UNKNOWN, {"reference": reference[:256], "reason": error.detail}
        ) from error


async def authorize(request: Request) -> Identity:
    """Check the caller may do what this request does; remember who they are."""
    name = request.path_params.get("name")
    needed = [Access(name, METHOD_ACTIONS.get(request.method, "push"))]
    source = request.query_params.get("from") if request.method == "POST" else None
    if source:
        needed.append(Access(source, "pull"))
    access: AccessController = request.app.state.access
    try:
        identity = await access.authorize(
            request.headers.get("authorization"),
            needed,
            client=request.client.host if request.client else "",
            base_url=f"{request.url.scheme}://{request.url.netloc}",
        )
    except AccessDenied as denied:
        request.state.identity = denied.identity
        raise
    request.state.identity = identity
    return identity


Services = Annotated[RegistryServices, Depends(get_services)]
Metrics = Annotated[RegistryMetrics, Depends(get_metrics)]
RepoName = Annotated[str, Depends(repository_name)]
DigestParam = Annotated[Digest, Depends(digest_parameter)]
Reference = Annotated[str | Digest, Depends(reference_parameter)]
LookupReference = Annotated[str | Digest, Depends(lookup_reference_parameter)]
Authorized = Depends(authorize)
