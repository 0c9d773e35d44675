"""One driver fixture, parametrised over every backend: each must pass the same suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.storage.driver import StorageDriver
from registry.storage.filesystem import FilesystemDriver


@pytest.fixture(params=["filesystem"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> StorageDriver:
    if request.param == "filesystem":
        return FilesystemDriver(tmp_path / "store")
    raise AssertionError(request.param)
