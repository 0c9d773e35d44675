"""What only the filesystem driver promises: where files land, and no temp files left."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from registry.storage.filesystem import DIRECT_BUFFER, FilesystemDriver

pytestmark = pytest.mark.anyio


async def test_files_live_under_root_and_no_temporaries_remain(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put_content("x/y/z", b"data")
    assert (tmp_path / "x/y/z").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "x/y").iterdir()] == ["z"]
    assert driver.local_path("x/y/z") == str(tmp_path / "x/y/z")


@pytest.mark.parametrize("direct_io", [True, False])
async def test_writes_at_unaligned_offsets_across_buffers(tmp_path: Path, direct_io: bool) -> None:
    """O_DIRECT staging: pieces of odd sizes, resumed at unaligned offsets, read back exactly."""
    driver = FilesystemDriver(tmp_path, direct_io=direct_io)
    data = os.urandom(3 * DIRECT_BUFFER + 12345)
    cuts = [
        0,
        1,
        4097,
        5000,
        DIRECT_BUFFER + 3,
        2 * DIRECT_BUFFER,
        3 * DIRECT_BUFFER + 1,
        len(data),
    ]
    for start, end in itertools.pairwise(cuts):
        writer = await driver.writer("upload/data", start)
        middle = (start + end) // 2
        await writer.write(data[start:middle])
        await writer.write(bytearray(data[middle:end]))
        assert writer.size == end
        await writer.commit()
        assert (tmp_path / "upload/data").read_bytes() == data[:end]
    cancelled = await driver.writer("upload/data", 4097)
    await cancelled.write(b"x" * 10_000)
    await cancelled.cancel()
    assert (tmp_path / "upload/data").read_bytes() == data[:4097]
