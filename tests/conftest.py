"""Fixtures: an app on a temporary folder, and an httpx client talking to it in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from config import Settings
from registry.app import create_app

USER, PASSWORD = "tester", "s3cret-pass"


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (modules with ``pytestmark = pytest.mark.anyio``) run on asyncio."""
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", username=USER, password=PASSWORD, _env_file=None)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


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
