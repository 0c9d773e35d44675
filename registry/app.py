"""Build the ASGI application from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import Settings
from registry import __version__
from registry.api import status
from registry.api.errors import install_error_handlers
from registry.api.v2 import routes as v2_routes
from registry.auth.basic import BasicAccessController, parse_htpasswd
from registry.metrics import RegistryMetrics
from registry.services import RegistryServices
from registry.storage.driver import StorageDriver
from registry.storage.filesystem import FilesystemDriver
from registry.storage.s3 import S3Driver

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
        return S3Driver(settings.storage.s3)
    return FilesystemDriver(settings.data_dir)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Release the storage driver's connections at shutdown."""
    yield
    await app.state.services.driver.close()


def create_access_controller(settings: Settings) -> BasicAccessController:
    """Users from the htpasswd file and the env user, else the generated ``admin``."""
    users: dict[str, bytes] = {}
    if settings.htpasswd_file is not None:
        users.update(parse_htpasswd(settings.htpasswd_file.read_text()))
    if not settings.has_configured_users and settings.generated_htpasswd.is_file():
        users.update(parse_htpasswd(settings.generated_htpasswd.read_text()))
    plain_users = {}
    if settings.username is not None and settings.password is not None:
        plain_users[settings.username] = settings.password.get_secret_value()
    return BasicAccessController(users, settings.realm, settings.anonymous_pull, plain_users)


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
    app.state.services = RegistryServices.over(create_driver(settings))
    app.state.access = create_access_controller(settings)
    app.state.metrics = RegistryMetrics()
    install_error_handlers(app)
    app.router.routes.extend([*status.router.routes, *v2_routes])
    app.state.metrics.install(app)
    app.add_middleware(ApiVersionHeader)
    return app


def create_app_from_env() -> FastAPI:
    """The application for hypercorn worker processes (settings from the environment)."""
    return create_app(Settings())
