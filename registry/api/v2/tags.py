"""The API root (ping), tags list and catalog."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from registry.api.deps import Authorized, RepoName, Services
from registry.api.responses import json_response
from registry.auth.base import Access, AccessController, Identity
from registry.oci.errors import ErrorCode, RegistryError

router = APIRouter(dependencies=[Authorized])
MAX_PAGE = 10_000


def _page_size(request: Request) -> int | None:
    text = request.query_params.get("n")
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, {"n": text[:32]})
    return min(int(text), MAX_PAGE)


def _paged(
    request: Request, body: dict[str, object], items: list[str], more: bool, n: int | None
) -> Response:
    response = json_response(body)
    if more and items and n:
        query = urlencode({"n": n, "last": items[-1]})
        response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    return response


@router.get("/v2/")
async def ping() -> Response:
    """The API exists and the caller is authorised."""
    return json_response({})


@router.get("/v2/_catalog")
async def catalog(request: Request, services: Services) -> Response:
    """Repositories the caller may pull, sorted, paginated with ``n`` and ``last``."""
    n = _page_size(request)
    access: AccessController = request.app.state.access
    identity: Identity = request.state.identity
    names: list[str] = []
    if n != 0:
        every, _ = await services.manifests.repositories(None, request.query_params.get("last"))
        names = [name for name in every if access.allows(identity, Access(name, "pull"))]
    more = n is not None and len(names) > n
    names = names[:n] if n is not None else names
    return _paged(request, {"repositories": names}, names, more, n)


@router.get("/v2/{name:path}/tags/list")
async def tags_list(request: Request, name: RepoName, services: Services) -> Response:
    """A repository's tags, sorted, paginated with ``n`` and ``last``."""
    n = _page_size(request)
    tags, more = await services.manifests.tags(name, n, request.query_params.get("last"))
    return _paged(request, {"name": name, "tags": [] if n == 0 else tags}, tags, more, n)
