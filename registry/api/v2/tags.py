"""The API root (ping), tags list and catalog."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from registry.api.deps import Authorized, RepoName, Services
from registry.api.responses import json_response
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
    """Repositories, sorted, paginated with ``n`` and ``last``."""
    n = _page_size(request)
    names, more = (
        ([], False)
        if n == 0
        else await services.manifests.repositories(n, request.query_params.get("last"))
    )
    return _paged(request, {"repositories": names}, names, more, n)


@router.get("/v2/{name:path}/tags/list")
async def tags_list(request: Request, name: RepoName, services: Services) -> Response:
    """A repository's tags, sorted, paginated with ``n`` and ``last``."""
    n = _page_size(request)
    tags, more = await services.manifests.tags(name, n, request.query_params.get("last"))
    return _paged(request, {"name": name, "tags": [] if n == 0 else tags}, tags, more, n)
