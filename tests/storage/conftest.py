"""One driver fixture, parametrised over every backend: each must pass the same suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.storage.driver import StorageDriver
from registry.storage.filesystem import FilesystemDriver
from registry.storage.s3 import S3Driver
from tests.s3 import S3Endpoint


@pytest.fixture(params=["filesystem", "s3"])
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageDriver]:
    if request.param == "filesystem":
        yield FilesystemDriver(tmp_path / "store")
        return
    endpoint: S3Endpoint = request.getfixturevalue("s3")
    s3_driver = S3Driver(endpoint.settings(prefix="some/prefix"))
    yield s3_driver
    await s3_driver.close()
