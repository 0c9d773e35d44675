"""What only the S3 driver promises: distribution's key layout, multipart writers that resume
server-side, exclusive writers across replicas, pre-signed redirects, translated errors."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from registry.storage.driver import PathBusy, PathNotFound, StorageError
from registry.storage.s3 import LOCKS, MAX_COPY_PART, MIB, MIN_PART, S3Driver, copy_ranges
from tests.s3 import S3Endpoint

pytestmark = pytest.mark.anyio


@pytest.fixture
async def s3_driver(s3: S3Endpoint) -> AsyncIterator[S3Driver]:
    driver = S3Driver(s3.settings(prefix="/root/dir/", part_size=MIN_PART, redirect=True))
    yield driver
    await driver.close()


async def raw_keys(driver: S3Driver) -> list[str]:
    client = await driver.client()
    listed = await client.list_objects_v2(Bucket=driver.bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


async def multipart_uploads(driver: S3Driver) -> list[str]:
    client = await driver.client()
    listed = await client.list_multipart_uploads(Bucket=driver.bucket)
    return [item["Key"] for item in listed.get("Uploads", [])]


async def test_keys_are_distributions_layout_under_the_prefix(s3_driver: S3Driver) -> None:
    await s3_driver.put_content("docker/registry/v2/repositories/a/_layers/link", b"x")
    assert await raw_keys(s3_driver) == ["root/dir/docker/registry/v2/repositories/a/_layers/link"]
    assert await s3_driver.list("docker/registry/v2/repositories") == ["a"]
    link = "docker/registry/v2/repositories/a/_layers/link"
    assert s3_driver.sendable_file(link, drop_behind=True) is None


async def test_multipart_writer_resumes_server_side_and_cleans_up(s3_driver: S3Driver) -> None:
    data = os.urandom(13 * MIB + 123)
    cuts = [0, 3 * MIB, 11 * MIB + 5, len(data)]  # small head read back, then copied parts
    for start, end in itertools.pairwise(cuts):
        writer = await s3_driver.writer("up/data", start)
        for piece in range(start, end, 3 * MIB):
            await writer.write(memoryview(data)[piece : min(piece + 3 * MIB, end)])
        assert writer.size == end
        await writer.commit()
        assert (await s3_driver.stat("up/data")).size == end
    assert await s3_driver.get_content("up/data") == data
    cancelled = await s3_driver.writer("up/data", 7 * MIB)
    await cancelled.write(os.urandom(6 * MIB))
    await cancelled.cancel()
    assert await s3_driver.get_content("up/data") == data
    assert await multipart_uploads(s3_driver) == []
    assert not [key for key in await raw_keys(s3_driver) if LOCKS in key]


async def test_writer_is_exclusive_until_committed(s3_driver: S3Driver) -> None:
    first = await s3_driver.writer("up/data", 0)
    with pytest.raises(PathBusy):
        await s3_driver.writer("up/data", 0)
    other = S3Driver(s3_driver.settings)  # another replica on the same bucket
    try:
        with pytest.raises(PathBusy):
            await other.writer("up/data", 0)
        await first.write(b"abc")
        await first.commit()
        second = await other.writer("up/data", 3)
        await second.write(b"def")
        await second.commit()
    finally:
        await other.close()
    assert await s3_driver.get_content("up/data") == b"abcdef"


async def test_an_expired_lease_is_taken_over(s3_driver: S3Driver) -> None:
    stale = json.dumps({"owner": "crashed", "expires": time.time() - 1}).encode()
    await s3_driver.put_content(f"{LOCKS}/up/data", stale)
    writer = await s3_driver.writer("up/data", 0)
    await writer.write(b"ok")
    await writer.commit()
    assert await s3_driver.get_content("up/data") == b"ok"


async def test_writer_offset_on_missing_file_is_not_found(s3_driver: S3Driver) -> None:
    with pytest.raises(PathNotFound):
        await s3_driver.writer("nothing/here", 5)
    again = await s3_driver.writer("nothing/here", 0)  # the failed open left no lock behind
    await again.cancel()


async def test_redirect_url_is_a_working_presigned_get(s3_driver: S3Driver) -> None:
    await s3_driver.put_content("blob/data", b"bytes from the bucket")
    url = await s3_driver.redirect_url("blob/data")
    assert url is not None and "X-Amz-Signature=" in url and "Expires=1200" in url
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).content == b"bytes from the bucket"


async def test_backend_errors_are_translated(s3: S3Endpoint) -> None:
    driver = S3Driver(s3.settings(bucket="no-such-bucket-here"))
    try:
        with pytest.raises(StorageError) as caught:
            await driver.put_content("a", b"x")
        assert not isinstance(caught.value, PathNotFound)
        assert "NoSuchBucket" in str(caught.value)
    finally:
        await driver.close()
    unreachable = S3Driver(s3.settings(bucket="b", endpoint_url="http://127.0.0.1:9"))
    try:
        with pytest.raises(StorageError):
            await unreachable.get_content("a")
    finally:
        await unreachable.close()


def test_copy_ranges_respect_s3_part_limits() -> None:
    for size in (MIN_PART, MAX_COPY_PART, MAX_COPY_PART + 1, 3 * MAX_COPY_PART + 7):
        ranges = copy_ranges(size)
        assert ranges[0][0] == 0 and ranges[-1][1] == size - 1
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
        assert all(MIN_PART <= last - first + 1 <= MAX_COPY_PART for first, last in ranges)


async def test_release_keeps_a_lease_another_writer_took_over(s3_driver: S3Driver) -> None:
    writer = await s3_driver.writer("up/data", 0)
    taken = json.dumps({"owner": "other", "expires": time.time() + 60}).encode()
    await s3_driver.put_content(f"{LOCKS}/up/data", taken)  # as after our lease expired
    await writer.write(b"x")
    await writer.commit()
    assert await s3_driver.get_content(f"{LOCKS}/up/data") == taken
    with pytest.raises(PathBusy):
        await s3_driver.writer("up/data", 0)
