"""The one place errors become responses: ``{"errors": [{"code", "message", "detail"}]}``."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from registry.oci.errors import ErrorCode, RegistryError
from registry.storage.driver import StorageError

log = logging.getLogger("registry")

_HTTP_CODES = {401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.DENIED, 404: ErrorCode.NOT_FOUND}


def error_response(error: RegistryError, request: Request | None = None) -> Response:
    """The spec's JSON error body with the code's status and any extra headers."""
    is_head = request is not None and request.method == "HEAD"
    body = orjson.dumps(error.body())
    response = Response(
        b"" if is_head else body,
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )
    if is_head:
        response.headers["content-length"] = str(len(body))
    return response


async def _registry_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RegistryError)
    return error_response(error, request)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = _HTTP_CODES.get(error.status_code, ErrorCode.UNSUPPORTED)
    detail = {"method": request.method, "path": request.url.path[:256]}
    return error_response(
        RegistryError(code, detail, status=error.status_code, headers=dict(error.headers or {})),
        request,
    )


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in error.errors()]
    return error_response(RegistryError(ErrorCode.UNSUPPORTED, detail, status=400), request)


async def _storage_error(request: Request, error: Exception) -> Response:
    log.error("storage failure on %s %s: %s", request.method, request.url.path, error)
    return error_response(RegistryError(ErrorCode.UNKNOWN, "storage failure"), request)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RegistryError, _registry_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StorageError, _storage_error)
