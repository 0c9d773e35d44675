"""Fixtures: an app on a temporary folder, and an httpx client talking to it in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from config import Settings, StorageSettings
from registry.app import create_app
from tests.s3 import S3Endpoint, s3_endpoint

USER, PASSWORD = "tester", "s3cret-pass"


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (modules with ``pytestmark = pytest.mark.anyio``) run on asyncio."""
    return "asyncio"


@pytest.fixture(params=["filesystem", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every API test runs on each storage backend."""
    param: str = request.param
    return param


@pytest.fixture
def settings(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Settings:
    storage = StorageSettings()
    if backend == "s3":
        endpoint: S3Endpoint = request.getfixturevalue("s3")
        storage = StorageSettings(backend="s3", s3=endpoint.settings(prefix="reg"))
    return Settings(
        data_dir=tmp_path / "data",
        username=USER,
        password=PASSWORD,
        storage=storage,
        _env_file=None,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    yield application
    await application.state.services.driver.close()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://registry.test", auth=(USER, PASSWORD)
    ) as client:
        yield client


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        yield client


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """One local S3 endpoint (moto server) for the whole run; tests take fresh buckets."""
    with s3_endpoint(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint
