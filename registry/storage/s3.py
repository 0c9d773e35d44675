"""The S3 driver: an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, GCS interoperability).

Keys are ``<prefix>/<path>``, exactly as distribution's S3 driver lays them out, so a bucket
written by ``registry:2`` is served as it is. Directories are key prefixes: ``list`` is one
delimiter listing, never a walk of the bucket.

Writers stream into S3 multipart uploads, holding at most one part in memory. A writer that
continues a file at ``offset`` starts from the bytes already stored without downloading them:
``UploadPartCopy`` copies them server-side as the first parts; only a head smaller than S3's
5 MiB minimum part is read back (as distribution does with a small last part). Committing
completes the multipart upload (or puts a small object), which replaces the key atomically.

A writer is exclusive across processes and replicas through a lock object created with a
conditional ``PUT`` (``If-None-Match: *``); it holds a lease (renewed while bytes flow), and an
expired lease is taken over with ``If-Match`` on its ETag, so a crashed replica blocks a path
for at most ``lock_ttl`` seconds.

Every botocore/aiohttp error is translated here: a missing key raises ``PathNotFound``,
anything else ``StorageError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from config import S3Settings
from registry.storage.driver import (
    FileInfo,
    PathBusy,
    PathNotFound,
    SendableFile,
    StorageError,
    check_path,
    together,
)

MIB = 1024 * 1024
MIN_PART = 5 * MIB  # S3's smallest part, except the last one
MAX_COPY_PART = 5 * 1024 * MIB  # S3's largest part, also for UploadPartCopy
READ_CHUNK = MIB
READ_AHEAD = 4  # chunks read ahead of the caller, per stream
_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
LOCKS = "_registry/locks"
_SESSION: list[Any] = []  # one botocore session per process: it caches the service models


def _session() -> Any:
    if not _SESSION:
        _SESSION.append(get_session())
    return _SESSION[0]


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _translated(path: str) -> Iterator[None]:
    """Turn the client's exceptions into the driver's."""
    try:
        yield
    except ClientError as error:
        if _code(error) in _NOT_FOUND:
            raise PathNotFound(path) from None
        raise StorageError(f"{path}: S3 {_code(error)}: {error}") from error
    except (BotoCoreError, aiohttp.ClientError, TimeoutError) as error:
        raise StorageError(f"{path}: S3 unreachable: {error}") from error


def copy_ranges(size: int) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into inclusive byte ranges each between 5 MiB and 5 GiB."""
    count = -(-size // MAX_COPY_PART)
    step = -(-size // count)
    return [(start, min(start + step, size) - 1) for start in range(0, size, step)]


class S3Writer:
    """Appends to one key through a multipart upload; see the module docstring."""

    def __init__(self, driver: S3Driver, path: str, key: str, size: int, lock: _Lock) -> None:
        self._driver = driver
        self._path = path
        self._key = key
        self._size = size
        self._lock = lock
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    async def _multipart(self) -> str:
        if self._upload_id is None:
            client = await self._driver.client()
            with _translated(self._path):
                created = await client.create_multipart_upload(
                    Bucket=self._driver.bucket, Key=self._key
                )
            self._upload_id = str(created["UploadId"])
        return self._upload_id

    async def start(self, offset: int) -> None:
        """Take the first ``offset`` stored bytes as this writer's starting content."""
        if offset == 0:
            return
        client = await self._driver.client()
        if offset < MIN_PART:  # too small for a part of its own: read it back (< 5 MiB)
            with _translated(self._path):
                response = await client.get_object(
                    Bucket=self._driver.bucket, Key=self._key, Range=f"bytes=0-{offset - 1}"
                )
                async with response["Body"] as body:
                    self._buffer += await body.read()
            return
        upload_id = await self._multipart()
        source = {"Bucket": self._driver.bucket, "Key": self._key}
        for first, last in copy_ranges(offset):
            number = len(self._parts) + 1
            with _translated(self._path):
                copied = await client.upload_part_copy(
                    Bucket=self._driver.bucket,
                    Key=self._key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={first}-{last}",
                )
            self._parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})

    async def _upload_part(self, data: bytes | bytearray) -> None:
        upload_id = await self._multipart()
        client = await self._driver.client()
        number = len(self._parts) + 1
        with _translated(self._path):
            uploaded = await client.upload_part(
                Bucket=self._driver.bucket,
                Key=self._key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
        self._parts.append({"PartNumber": number, "ETag": uploaded["ETag"]})

    @property
    def thread_write(self) -> None:
        return None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise StorageError(f"{self._path}: writer is closed")
        self._buffer += data
        self._size += len(data)
        part_size = self._driver.settings.part_size
        while len(self._buffer) >= part_size:
            if len(self._buffer) == part_size:  # the usual case: hand the buffer over
                part, self._buffer = self._buffer, bytearray()
            else:
                with memoryview(self._buffer) as view:
                    part = bytearray(view[:part_size])
                del self._buffer[:part_size]
            await self._upload_part(part)
            await self._lock.renew_if_due()

    async def commit(self, alongside: Awaitable[None] | None = None) -> None:
        if self._closed:
            raise StorageError(f"{self._path}: writer is closed")

        async def stored_then_release() -> None:
            try:
                await together(self._complete(), alongside)
            except BaseException:
                await self.cancel()
                raise
            self._buffer = bytearray()
            self._closed = True
            await self._lock.release()

        # as on the filesystem: if this is cancelled, the completion and ``alongside`` go on,
        # and the upload is aborted (on an error) or the lease released only once both are done
        await asyncio.shield(stored_then_release())

    async def _complete(self) -> None:
        """Store what was written: one object, or the multipart upload completed."""
        client = await self._driver.client()
        if self._upload_id is None:
            with _translated(self._path):
                await client.put_object(
                    Bucket=self._driver.bucket, Key=self._key, Body=bytes(self._buffer)
                )
            return
        if self._buffer:
            await self._upload_part(bytes(self._buffer))
        with _translated(self._path):
            await client.complete_multipart_upload(
                Bucket=self._driver.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._upload_id = None

    async def cancel(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer = bytearray()
        try:
            if self._upload_id is not None:
                client = await self._driver.client()
                with contextlib.suppress(StorageError), _translated(self._path):
                    await client.abort_multipart_upload(
                        Bucket=self._driver.bucket, Key=self._key, UploadId=self._upload_id
                    )
        finally:
            await self._lock.release()


class _Lock:
    """A writer's lease on one path: an object created only if absent, see the module doc."""

    def __init__(self, driver: S3Driver, path: str) -> None:
        self._driver = driver
        self._path = path
        self._key = driver.key(f"{LOCKS}/{path}")
        self._owner = os.urandom(12).hex()
        self._etag: str | None = None
        self._renewed = 0.0

    def _body(self) -> bytes:
        expires = time.time() + self._driver.settings.lock_ttl
        return json.dumps({"owner": self._owner, "expires": expires}).encode()

    async def acquire(self) -> None:
        client = await self._driver.client()
        bucket = self._driver.bucket
        try:
            with _translated(self._path):
                put = await client.put_object(
                    Bucket=bucket, Key=self._key, Body=self._body(), IfNoneMatch="*"
                )
        except StorageError as error:
            cause = error.__cause__
            if not isinstance(cause, ClientError) or _code(cause) not in _PRECONDITION:
                raise
            put = await self._take_over_if_expired()
        self._etag = str(put["ETag"])
        self._renewed = time.monotonic()

    async def _take_over_if_expired(self) -> dict[str, Any]:
        client = await self._driver.client()
        try:
            with _translated(self._path):
                held = await client.get_object(Bucket=self._driver.bucket, Key=self._key)
                async with held["Body"] as body:
                    lease = json.loads(await body.read())
            if float(lease["expires"]) > time.time():
                raise PathBusy(self._path)
            with _translated(self._path):
                result: dict[str, Any] = await client.put_object(
                    Bucket=self._driver.bucket,
                    Key=self._key,
                    Body=self._body(),
                    IfMatch=held["ETag"],
                )
            return result
        except PathNotFound:  # released meanwhile: try once more from the start
            with _translated(self._path):
                again: dict[str, Any] = await client.put_object(
                    Bucket=self._driver.bucket, Key=self._key, Body=self._body(), IfNoneMatch="*"
                )
            return again
        except (ValueError, KeyError, TypeError):
            raise PathBusy(self._path) from None
        except StorageError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and _code(cause) in _PRECONDITION:
                raise PathBusy(self._path) from None
            raise

    async def renew_if_due(self) -> None:
        """Extend the lease once a third of it has passed (called while bytes flow)."""
        if time.monotonic() - self._renewed < self._driver.settings.lock_ttl / 3:
            return
        client = await self._driver.client()
        with _translated(self._path):
            put = await client.put_object(
                Bucket=self._driver.bucket, Key=self._key, Body=self._body(), IfMatch=self._etag
            )
        self._etag = str(put["ETag"])
        self._renewed = time.monotonic()

    async def release(self) -> None:
        if self._etag is None:
            return
        client = await self._driver.client()
        etag, self._etag = self._etag, None
        try:
            with _translated(self._path):
                await client.delete_object(Bucket=self._driver.bucket, Key=self._key, IfMatch=etag)
        except StorageError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and _code(cause) in _PRECONDITION | _NOT_FOUND:
                return  # our lease expired and another writer holds the path now
            # a store without conditional deletes: delete it anyway, else it blocks for TTL
            with contextlib.suppress(StorageError), _translated(self._path):
                await client.delete_object(Bucket=self._driver.bucket, Key=self._key)


class S3Driver:
    """Stores every path as the object ``<prefix>/<path>`` in one bucket."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/")
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._opening = asyncio.Lock()

    def key(self, path: str) -> str:
        path = check_path(path)
        return f"{self.prefix}/{path}" if self.prefix else path

    async def client(self) -> Any:
        """The S3 client, created on first use inside the running event loop."""
        if self._client is None:
            async with self._opening:
                if self._client is None:
                    stack = AsyncExitStack()
                    config = AioConfig(
                        s3={"addressing_style": "path" if self.settings.path_style else "auto"},
                        retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=10,
                        max_pool_connections=self.settings.max_connections,
                        signature_version="s3v4",
                        # no CRC trailers on every upload: MinIO, Ceph RGW and GCS reject
                        # botocore's newer default, and the registry checks sha256 itself
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                    )
                    self._client = await stack.enter_async_context(
                        _session().create_client(
                            "s3",
                            region_name=self.settings.region,
                            endpoint_url=self.settings.endpoint_url,
                            config=config,
                        )
                    )
                    self._stack = stack
        return self._client

    async def _head(self, path: str) -> dict[str, Any]:
        client = await self.client()
        with _translated(path):
            result: dict[str, Any] = await client.head_object(
                Bucket=self.bucket, Key=self.key(path)
            )
        return result

    async def get_content(self, path: str) -> bytes:
        client = await self.client()
        with _translated(path):
            response = await client.get_object(Bucket=self.bucket, Key=self.key(path))
            async with response["Body"] as body:
                data: bytes = await body.read()
        return data

    async def put_content(self, path: str, content: bytes) -> None:
        client = await self.client()
        with _translated(path):
            await client.put_object(Bucket=self.bucket, Key=self.key(path), Body=content)

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        key = self.key(path)
        if length == 0:
            await self._head(path)
            return
        end = "" if length is None else str(offset + length - 1)
        client = await self.client()
        try:
            with _translated(path):
                response = await client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{end}"
                )
        except StorageError as error:  # at or past the end: nothing to read
            cause = error.__cause__
            if (
                isinstance(cause, ClientError)
                and _code(cause) == "InvalidRange"
                and (await self._head(path))["ContentLength"] <= offset
            ):
                return
            raise
        body = response["Body"]
        ahead: asyncio.Queue[bytes | StorageError] = asyncio.Queue(maxsize=READ_AHEAD)

        async def fetch() -> None:  # keeps reading from S3 while the caller sends a chunk
            while True:
                try:
                    with _translated(path):
                        chunk = await body.read(READ_CHUNK)
                except StorageError as error:
                    await ahead.put(error)
                    return
                await ahead.put(chunk)
                if not chunk:
                    return

        fetcher = asyncio.ensure_future(fetch())
        try:
            while True:
                item = await ahead.get()
                if isinstance(item, StorageError):
                    raise item
                if not item:
                    break
                yield item
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher
            body.close()

    async def writer(self, path: str, offset: int = 0) -> S3Writer:
        key = self.key(path)
        lock = _Lock(self, path)
        await lock.acquire()
        writer = S3Writer(self, path, key, offset, lock)
        try:
            if offset > 0:
                size = int((await self._head(path))["ContentLength"])
                if size < offset:
                    raise StorageError(f"{path}: has {size} bytes, cannot continue at {offset}")
            await writer.start(offset)
        except BaseException:
            await writer.cancel()
            raise
        return writer

    async def stat(self, path: str) -> FileInfo:
        try:
            head = await self._head(path)
        except PathNotFound:
            client = await self.client()
            with _translated(path):
                listed = await client.list_objects_v2(
                    Bucket=self.bucket, Prefix=f"{self.key(path)}/", MaxKeys=1
                )
            if not listed.get("KeyCount"):
                raise
            return FileInfo(path, 0, 0.0, True)
        modified = head["LastModified"].timestamp()
        return FileInfo(path, int(head["ContentLength"]), modified, False)

    async def _keys(self, prefix: str, path: str, delimiter: str | None) -> AsyncIterator[str]:
        """Every key (and common prefix, with a delimiter) under ``prefix``, page by page."""
        client = await self.client()
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            arguments["Delimiter"] = delimiter
        paginator = client.get_paginator("list_objects_v2")
        with _translated(path):
            async for page in paginator.paginate(**arguments):
                for item in page.get("CommonPrefixes", []):
                    yield str(item["Prefix"])
                for item in page.get("Contents", []):
                    yield str(item["Key"])

    async def list(self, path: str) -> list[str]:
        prefix = f"{self.key(path)}/"
        names = [key[len(prefix) :].rstrip("/") async for key in self._keys(prefix, path, "/")]
        if not names:
            raise PathNotFound(path)
        return names

    async def _copy(self, source: str, destination: str, size: int) -> None:
        """Server-side copy: one CopyObject, or a multipart copy above 5 GiB."""
        client = await self.client()
        copy_source = {"Bucket": self.bucket, "Key": self.key(source)}
        target = self.key(destination)
        with _translated(source):
            if size <= MAX_COPY_PART:
                await client.copy_object(Bucket=self.bucket, Key=target, CopySource=copy_source)
                return
            created = await client.create_multipart_upload(Bucket=self.bucket, Key=target)
            upload_id = created["UploadId"]
            try:
                parts = []
                for number, (first, last) in enumerate(copy_ranges(size), start=1):
                    copied = await client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=target,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=copy_source,
                        CopySourceRange=f"bytes={first}-{last}",
                    )
                    parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
                await client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await client.abort_multipart_upload(
                        Bucket=self.bucket, Key=target, UploadId=upload_id
                    )
                raise

    async def move(self, source: str, destination: str) -> None:
        size = int((await self._head(source))["ContentLength"])
        self.key(destination)
        await self._copy(source, destination, size)
        client = await self.client()
        with _translated(source):
            await client.delete_object(Bucket=self.bucket, Key=self.key(source))

    async def delete(self, path: str) -> None:
        key = self.key(path)
        client = await self.client()
        keys = [k async for k in self._keys(f"{key}/", path, None)]
        try:
            await self._head(path)
            keys.append(key)
        except PathNotFound:
            if not keys:
                raise
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            with _translated(path):
                result = await client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            if result.get("Errors"):
                raise StorageError(f"{path}: S3 could not delete {result['Errors'][0]}")

    async def redirect_url(self, path: str) -> str | None:
        """A pre-signed GET valid for ``redirect_ttl`` seconds, when redirects are on."""
        if not self.settings.redirect:
            return None
        client = await self.client()
        with _translated(path):
            url: str = await client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self.key(path)},
                ExpiresIn=self.settings.redirect_ttl,
            )
        return url

    def sendable_file(self, path: str, drop_behind: bool = False) -> SendableFile | None:
        return None

    async def close(self) -> None:
        """Close the client's connection pool."""
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()
