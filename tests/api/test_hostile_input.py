"""Bad input gets an OCI error with a 4xx status: never a 500, never a path outside the root."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from config import Settings

pytestmark = pytest.mark.anyio
DIGEST = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/UPPER/tags/list"),
        ("GET", "/v2/a/%2e%2e/b/tags/list"),
        ("GET", "/v2/%2e%2e/%2e%2e/etc/tags/list"),
        ("GET", "/v2/a%00b/tags/list"),
        ("GET", "/v2/a%2fb/tags/list"),
        ("GET", "/v2/_uploads/tags/list"),
        ("GET", f"/v2/{'a' * 300}/tags/list"),
        ("GET", "/v2/a/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd"),
        ("GET", "/v2/a/blobs/sha256%3A..%2F..%2Fx"),
        ("GET", "/v2/a/manifests/..%2f..%2fx"),
        ("GET", "/v2/a/manifests/%00"),
        ("PUT", "/v2/a/manifests/tag%0Ax"),
        ("GET", "/v2/a/blobs/uploads/..%2f..%2fx"),
        ("PATCH", "/v2/a/blobs/uploads/%2e%2e"),
        ("PUT", "/v2/a/blobs/uploads/x?digest=../../etc"),
        ("POST", "/v2/a/blobs/uploads/?mount=../../x&from=b"),
        ("POST", "/v2/a/blobs/uploads/?mount=" + DIGEST + "&from=../x"),
        ("POST", "/v2/a/blobs/uploads/?digest-algorithm=md5"),
        ("GET", "/v2/a/referrers/../x"),
        ("GET", "/v2/_catalog?n=abc"),
        ("GET", "/v2/nope"),
        ("DELETE", "/v2/"),
        ("GET", "/v2/a/tags/list?n=99999999999999999999999"),
    ],
)
async def test_hostile_requests(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path, method: str, path: str
) -> None:
    before = set(tmp_path.rglob("*"))  # noqa: ASYNC240 - a test's own tiny temp folder
    response = await client.request(method, path, content=b"x" * 10)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    errors = response.json()["errors"]
    assert errors and {"code", "message", "detail"} <= set(errors[0])
    created = set(tmp_path.rglob("*")) - before  # noqa: ASYNC240
    assert all(p.is_relative_to(settings.data_dir) for p in created)


async def test_huge_content_range_is_rejected(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/a/blobs/uploads/")).headers["location"]
    response = await client.patch(
        location, content=b"abc", headers={"Content-Range": "0-99999999999"}
    )
    assert response.status_code == 416
    response = await client.patch(location, content=b"abc", headers={"Content-Range": "garbage"})
    assert response.status_code == 416


async def test_patch_length_mismatch(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/a/blobs/uploads/")).headers["location"]
    response = await client.patch(location, content=b"abc", headers={"Content-Range": "0-9"})
    assert response.status_code == 416
    status = await client.get(location)
    assert status.headers["range"] == "0-0"


async def test_deletes_can_be_disabled(tmp_path: Path) -> None:
    from registry.app import create_app

    settings = Settings(
        data_dir=tmp_path, username="u", password="p", delete_enabled=False, _env_file=None
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://r", auth=("u", "p")) as c:
        response = await c.delete(f"/v2/a/manifests/{DIGEST}")
        assert response.status_code == 405
        assert response.json()["errors"][0]["code"] == "UNSUPPORTED"
