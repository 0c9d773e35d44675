"""Build the ASGI application from settings."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import Settings
from registry import __version__
from registry.api import status
from registry.api.audit import AuditLog, configure_audit_log
from registry.api.errors import install_error_handlers
from registry.api.limits import LimitsMiddleware
from registry.api.openapi import schema as openapi_schema
from registry.api.v2 import routes as v2_routes
from registry.auth.setup import create_access_controller
from registry.auth.tokenserver import router as token_router
from registry.background import lifespan
from registry.metrics import RegistryMetrics
from registry.process import configure_logging, keep_buffers_in_heap
from registry.services import RegistryServices
from registry.storage.driver import StorageDriver
from registry.storage.filesystem import FilesystemDriver

API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")


class ApiVersionHeader:
    """Adds ``Docker-Distribution-API-Version: registry/2.0`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), API_VERSION_HEADER]
            await send(message)

        await self.app(scope, receive, send_with_header)


def create_driver(settings: Settings) -> StorageDriver:
    """The backend ``REGISTRY_STORAGE__BACKEND`` names."""
    if settings.storage.backend == "s3":
        from registry.storage.s3 import S3Driver  # aiobotocore: ~25 MiB a worker, only for S3

        return S3Driver(settings.storage.s3)
    return FilesystemDriver(settings.data_dir)


def create_app(settings: Settings) -> FastAPI:
    """The registry application over the storage that ``settings`` describe."""
    app = FastAPI(
        title="registry",
        version=__version__,
        description="OCI Distribution Spec v1.1 registry",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.access = access = create_access_controller(settings)
    app.state.services = RegistryServices.over(create_driver(settings), access.policy.immutable)
    app.state.metrics = RegistryMetrics()
    install_error_handlers(app)
    configure_audit_log(settings.auth.audit_log)
    document = openapi_schema()
    app.openapi = lambda: document  # type: ignore[method-assign]
    app.router.routes.extend([*status.router.routes, *v2_routes])
    if settings.auth.mode == "token":
        app.router.routes.extend(token_router.routes)
    app.state.metrics.install(app)
    app.add_middleware(ApiVersionHeader)
    app.add_middleware(AuditLog)
    app.add_middleware(LimitsMiddleware, settings=settings.limits)
    return app


def create_app_from_env() -> FastAPI:
    """The application for the server's worker processes (settings from the environment).

    Each worker process sets up its logging and allocator here (a no-op where inherited).
    """
    settings = Settings()
    configure_logging(settings)
    if settings.server != "granian":  # granian sends blobs itself; its threads share malloc
        keep_buffers_in_heap()
    return create_app(settings)
