"""Basic authentication: challenges, htpasswd users, anonymous pull, the generated admin."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import httpx
import pytest

from config import Settings
from registry.app import create_app
from registry.auth.basic import ensure_generated_user, parse_htpasswd
from tests.helpers import assert_error, push_image

pytestmark = pytest.mark.anyio


def client_for(settings: Settings, auth: tuple[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://r", auth=auth)


async def test_ping_requires_credentials(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/v2/")
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"].startswith('Basic realm="Registry"')
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


async def test_ping_with_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/")
    assert response.status_code == 200 and response.json() == {}


@pytest.mark.parametrize(
    "header",
    ["Basic d3Jvbmc6d3Jvbmc=", "Basic !!!", "Bearer abc", "Basic " + "A" * 5000, "Basic dGVzdGVy"],
)
async def test_bad_credentials_are_401(anonymous: httpx.AsyncClient, header: str) -> None:
    assert_error(
        await anonymous.get("/v2/", headers={"Authorization": header}), 401, "UNAUTHORIZED"
    )


async def test_wrong_password_is_401(app: object, anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/v2/_catalog", auth=("tester", "wrong"))
    assert_error(response, 401, "UNAUTHORIZED")


async def test_every_api_route_needs_auth(anonymous: httpx.AsyncClient) -> None:
    digest = "sha256:" + "0" * 64
    for method, path in [
        ("GET", "/v2/_catalog"),
        ("GET", "/v2/a/tags/list"),
        ("GET", f"/v2/a/blobs/{digest}"),
        ("POST", "/v2/a/blobs/uploads/"),
        ("PUT", "/v2/a/manifests/t"),
        ("DELETE", f"/v2/a/manifests/{digest}"),
        ("GET", f"/v2/a/referrers/{digest}"),
    ]:
        assert_error(await anonymous.request(method, path), 401, "UNAUTHORIZED")


async def test_htpasswd_users(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"pw1", bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"# comment\nalice:{hashed}\nbroken line\nbob:plaintext-not-accepted\n")
    settings = Settings(data_dir=tmp_path / "d", htpasswd_file=htpasswd, _env_file=None)
    async with client_for(settings, ("alice", "pw1")) as alice:
        assert (await alice.get("/v2/")).status_code == 200
        assert (await alice.get("/v2/")).status_code == 200  # from the verified cache
    async with client_for(settings, ("bob", "plaintext-not-accepted")) as bob:
        assert (await bob.get("/v2/")).status_code == 401
    async with client_for(settings, ("alice", "pw2")) as wrong:
        assert (await wrong.get("/v2/")).status_code == 401


async def test_anonymous_pull(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", username="u", password="p", anonymous_pull=True, _env_file=None
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://r", auth=("u", "p")
    ) as writer:
        digest, raw = await push_image(writer, "pub", "v1", [b"layer"])
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as reader:
        assert (await reader.get("/v2/pub/manifests/v1")).content == raw
        assert (await reader.get("/v2/pub/tags/list")).status_code == 200
        # the ping still challenges, so clients learn the scheme; writes need credentials
        assert (await reader.get("/v2/")).status_code == 401
        assert (await reader.post("/v2/pub/blobs/uploads/")).status_code == 401
        assert (await reader.delete(f"/v2/pub/manifests/{digest}")).status_code == 401


def test_generated_user_is_created_once(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "htpasswd"
    password = ensure_generated_user(path)
    assert password is not None and len(password) >= 20
    assert ensure_generated_user(path) is None
    text = path.read_text()
    assert password not in text
    users = parse_htpasswd(text)
    assert bcrypt.checkpw(password.encode(), users["admin"])
    assert path.stat().st_mode & 0o777 == 0o600
