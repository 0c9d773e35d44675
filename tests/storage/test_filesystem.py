"""What only the filesystem driver promises: where files land, and no temp files left."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.storage.filesystem import FilesystemDriver

pytestmark = pytest.mark.anyio


async def test_files_live_under_root_and_no_temporaries_remain(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put_content("x/y/z", b"data")
    assert (tmp_path / "x/y/z").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "x/y").iterdir()] == ["z"]
    assert driver.local_path("x/y/z") == str(tmp_path / "x/y/z")
