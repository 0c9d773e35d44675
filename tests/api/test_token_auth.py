"""Token mode through the HTTP API: challenges, the token endpoint (GET and OAuth2 POST),
per-repository policy, 401 vs 403, catalog filtering, OIDC logins, immutable tags, the audit
log and the login throttle."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import jwt
import pytest
from fastapi import FastAPI

from config import AuthSettings, Settings
from registry.app import create_app
from tests.helpers import OCI_MANIFEST, assert_error, push_image
from tests.oidc_issuer import AUDIENCE, Issuer, running_issuer

pytestmark = pytest.mark.anyio
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "ci": "robot-pw"}


def policy_text(issuer_url: str) -> str:
    hashes = {
        n: bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode() for n, p in PASSWORDS.items()
    }
    return f"""
users: {{alice: "{hashes["alice"]}", bob: "{hashes["bob"]}"}}
robots: {{ci: "{hashes["ci"]}"}}
groups: {{team-a: [alice, ci]}}
rules:
  - {{repositories: ["team-a/**"], groups: [team-a], actions: [pull, push, delete]}}
  - {{repositories: ["team-a/**"], users: [bob], actions: [pull]}}
  - {{repositories: ["team-b/**"], users: [bob], actions: [pull, push, delete]}}
  - {{repositories: ["public/*"], anonymous: true, actions: [pull]}}
  - {{repositories: ["public/*"], users: [alice], actions: [push]}}
immutable_tags:
  - {{repositories: ["team-a/**"], tags: ["v*"]}}
oidc:
  - issuer: {issuer_url}
    audience: {AUDIENCE}
    rules:
      - conditions: {{repository: my-org/app, ref: ["refs/heads/main", "refs/tags/v*"]}}
        repositories: ["my-org/app/**"]
        actions: [pull, push]
"""


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with running_issuer() as issuer:
        yield issuer


@pytest.fixture
def token_settings(tmp_path: Path, issuer: Issuer) -> Settings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(issuer.url))
    auth = AuthSettings(
        mode="token",
        policy_file=policy,
        service="registry.test",
        issuer="test-issuer",
        oidc_allow_http=True,
        max_failed_logins=5,
    )
    return Settings(data_dir=tmp_path / "data", auth=auth, _env_file=None)


@pytest.fixture
def token_app(token_settings: Settings) -> FastAPI:
    return create_app(token_settings)


@pytest.fixture
async def http(token_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=token_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        yield client


async def get_token(
    http: httpx.AsyncClient,
    auth: tuple[str, str] | None,
    *scopes: str,
    service: str = "registry.test",
    **params: str,
) -> dict[str, Any]:
    response = await http.get(
        "/auth/token",
        params=[("service", service), *(("scope", s) for s in scopes), *params.items()],
        auth=auth,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class AsUser(httpx.Auth):
    """Bearer auth that fetches a token for the repository's scope, as docker does."""

    def __init__(self, http: httpx.AsyncClient, user: str, actions: str = "pull,push") -> None:
        self.http, self.user, self.actions = http, user, actions

    async def async_auth_flow(self, request: httpx.Request) -> AsyncIterator[httpx.Request]:  # type: ignore[override]
        name = request.url.path.removeprefix("/v2/").split("/blobs/")[0].split("/manifests/")[0]
        body = await get_token(
            self.http, (self.user, PASSWORDS[self.user]), f"repository:{name}:{self.actions}"
        )
        request.headers["Authorization"] = f"Bearer {body['token']}"
        yield request


async def test_ping_challenges_with_bearer(http: httpx.AsyncClient) -> None:
    response = await http.get("/v2/")
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == (
        'Bearer realm="http://registry.test/auth/token",service="registry.test"'
    )
    push = await http.post("/v2/team-a/app/blobs/uploads/")
    assert push.headers["www-authenticate"] == (
        'Bearer realm="http://registry.test/auth/token",service="registry.test",'
        'scope="repository:team-a/app:pull,push"'
    )


async def test_token_get_grants_what_the_policy_allows(http: httpx.AsyncClient) -> None:
    body = await get_token(
        http,
        ("bob", "bob-pw"),
        "repository:team-a/app:pull,push",
        "repository:team-b/x:*",
        offline_token="true",
    )
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == "bob" and claims["aud"] == "registry.test"
    assert claims["iss"] == "test-issuer"
    assert claims["access"] == [
        {"type": "repository", "name": "team-a/app", "actions": ["pull"]},
        {"type": "repository", "name": "team-b/x", "actions": ["pull", "push", "delete"]},
    ]
    assert body["access_token"] == body["token"] and body["expires_in"] == 300
    assert "refresh_token" in body
    ping = await http.get("/v2/", headers=bearer(body["token"]))
    assert ping.status_code == 200


async def test_token_post_password_and_refresh(http: httpx.AsyncClient) -> None:
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "alice-pw",
        "service": "registry.test",
        "client_id": "docker",
        "access_type": "offline",
        "scope": "repository:team-a/app:pull,push",
    }
    first = await http.post("/auth/token", data=form)
    assert first.status_code == 200, first.text
    refresh = first.json()["refresh_token"]
    again = await http.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": "registry.test",
            "client_id": "docker",
            "scope": "repository:team-a/other:push repository:team-b/x:pull",
        },
    )
    assert again.status_code == 200, again.text
    claims = jwt.decode(again.json()["token"], options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "team-a/other", "actions": ["push"]}]
    wrong = await http.post("/auth/token", data={**form, "password": "nope"})
    assert_error(wrong, 401, "UNAUTHORIZED")
    bad_refresh = await http.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": first.json()["token"]}
    )
    assert_error(bad_refresh, 401, "UNAUTHORIZED")
    unknown = await http.post("/auth/token", data={"grant_type": "client_credentials"})
    assert_error(unknown, 400, "UNSUPPORTED")
    other_service = await http.post("/auth/token", data={**form, "service": "elsewhere"})
    assert_error(other_service, 403, "DENIED")


async def test_push_pull_with_tokens_and_403_when_not_allowed(http: httpx.AsyncClient) -> None:
    http.auth = AsUser(http, "alice")
    digest, raw = await push_image(http, "team-a/app", "latest", [b"layer-a"])
    http.auth = AsUser(http, "bob")
    assert (await http.get("/v2/team-a/app/manifests/latest")).content == raw
    denied = await http.put(
        "/v2/team-a/app/manifests/other", content=raw, headers={"Content-Type": OCI_MANIFEST}
    )
    assert_error(denied, 403, "DENIED")
    assert_error(await http.post("/v2/team-a/app/blobs/uploads/"), 403, "DENIED")
    http.auth = AsUser(http, "bob", "delete")
    assert_error(await http.delete(f"/v2/team-a/app/manifests/{digest}"), 403, "DENIED")
    # the robot is in team-a
    http.auth = AsUser(http, "ci")
    await push_image(http, "team-a/app/worker", "1", [b"layer-w"])


async def test_token_for_another_repository_is_asked_to_widen(http: httpx.AsyncClient) -> None:
    token = (await get_token(http, ("alice", "alice-pw"), "repository:team-a/one:pull"))["token"]
    response = await http.get("/v2/team-a/two/tags/list", headers=bearer(token))
    assert_error(response, 401, "UNAUTHORIZED")
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert 'scope="repository:team-a/two:pull"' in response.headers["www-authenticate"]
    forbidden = await http.get("/v2/team-b/x/tags/list", headers=bearer(token))
    assert_error(forbidden, 403, "DENIED")
    broken = await http.get("/v2/team-a/one/tags/list", headers=bearer(token[:-4] + "AAAA"))
    assert_error(broken, 401, "UNAUTHORIZED")
    assert 'error="invalid_token"' in broken.headers["www-authenticate"]


async def test_anonymous_pull_per_pattern(http: httpx.AsyncClient) -> None:
    http.auth = AsUser(http, "alice")
    _, raw = await push_image(http, "public/base", "1", [b"base"])
    await push_image(http, "team-a/private", "1", [b"private"])
    http.auth = httpx.Auth()  # none
    assert (await http.get("/v2/public/base/manifests/1")).content == raw
    assert_error(await http.get("/v2/team-a/private/manifests/1"), 401, "UNAUTHORIZED")
    assert_error(await http.post("/v2/public/base/blobs/uploads/"), 401, "UNAUTHORIZED")
    anonymous = await get_token(http, None, "repository:public/base:pull,push")
    claims = jwt.decode(anonymous["token"], options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "public/base", "actions": ["pull"]}]
    assert "refresh_token" not in anonymous


async def test_catalog_lists_only_what_the_caller_may_pull(http: httpx.AsyncClient) -> None:
    for name in ("team-a/one", "team-b/secret", "public/base"):
        http.auth = AsUser(http, "bob" if name.startswith("team-b") else "alice")
        await push_image(http, name, "1", [name.encode()])
    http.auth = httpx.Auth()  # none
    for user, expected in [
        ("alice", ["public/base", "team-a/one"]),
        ("bob", ["public/base", "team-a/one", "team-b/secret"]),
    ]:
        token = (await get_token(http, (user, PASSWORDS[user]), "registry:catalog:*"))["token"]
        catalog = await http.get("/v2/_catalog", headers=bearer(token))
        assert catalog.json() == {"repositories": expected}
    token = (await get_token(http, ("bob", "bob-pw"), "registry:catalog:*"))["token"]
    page = await http.get("/v2/_catalog", params={"n": 2}, headers=bearer(token))
    assert page.json() == {"repositories": ["public/base", "team-a/one"]}
    assert "last=team-a%2Fone" in page.headers["link"]
    # Basic credentials are accepted on the API too, with the same policy
    basic = await http.get("/v2/_catalog", auth=("alice", "alice-pw"))
    assert basic.json() == {"repositories": ["public/base", "team-a/one"]}
    assert_error(await http.get("/v2/_catalog"), 401, "UNAUTHORIZED")


async def test_oidc_login_pushes_only_to_mapped_repositories(
    http: httpx.AsyncClient, issuer: Issuer
) -> None:
    id_token = issuer.mint()
    body = await get_token(
        http,
        ("oidc", id_token),
        "repository:my-org/app/api:pull,push",
        "repository:team-a/app:pull,push",
        offline_token="true",
    )
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["kind"] == "oidc" and claims["sub"] == "repo:my-org/app:ref:refs/heads/main"
    assert claims["access"] == [
        {"type": "repository", "name": "my-org/app/api", "actions": ["pull", "push"]}
    ]
    http.headers.update(bearer(body["token"]))
    await push_image(http, "my-org/app/api", "main", [b"from-ci"])
    # a docker client then widens its token with the refresh token
    refreshed = await http.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "scope": "repository:my-org/app/other:push",
        },
    )
    widened = jwt.decode(refreshed.json()["token"], options={"verify_signature": False})
    assert widened["access"][0]["name"] == "my-org/app/other"
    denied = await http.post("/v2/team-a/app/blobs/uploads/")
    assert_error(denied, 403, "DENIED")
    # OIDC tokens also work as Basic credentials on the API
    del http.headers["authorization"]
    direct = await http.get("/v2/my-org/app/api/tags/list", auth=("oidc", id_token))
    assert direct.json()["tags"] == ["main"]


@pytest.mark.parametrize(
    "overrides",
    [{"aud": "other"}, {"ref": "refs/heads/feature"}, {"exp": 1_000_000}, {"iss": "https://x"}],
)
async def test_oidc_refusals_say_nothing_to_the_client(
    http: httpx.AsyncClient, issuer: Issuer, overrides: dict[str, Any], caplog: Any
) -> None:
    caplog.set_level(logging.INFO, "registry.auth")
    response = await http.get("/auth/token", auth=("oidc", issuer.mint(**overrides)))
    assert_error(response, 401, "UNAUTHORIZED")
    assert "OIDC" not in response.text and "audience" not in response.text.lower()
    assert any("OIDC token refused" in r.getMessage() for r in caplog.records)


async def test_immutable_tags(http: httpx.AsyncClient) -> None:
    http.auth = AsUser(http, "alice", "pull,push,delete")
    digest, raw = await push_image(http, "team-a/app", "v1.0", [b"one"])
    again = await http.put(
        "/v2/team-a/app/manifests/v1.0", content=raw, headers={"Content-Type": OCI_MANIFEST}
    )
    assert again.status_code == 201  # the identical manifest again is fine
    other_digest, other = await push_image(http, "team-a/app", "latest", [b"two"])
    moved = await http.put(
        "/v2/team-a/app/manifests/v1.0", content=other, headers={"Content-Type": OCI_MANIFEST}
    )
    assert_error(moved, 403, "DENIED")
    assert "immutable" in moved.json()["errors"][0]["message"]
    by_query = await http.put(
        f"/v2/team-a/app/manifests/{other_digest}",
        params={"tag": "v1.0"},
        content=other,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert_error(by_query, 403, "DENIED")
    assert_error(await http.delete("/v2/team-a/app/manifests/v1.0"), 403, "DENIED")
    assert_error(await http.delete(f"/v2/team-a/app/manifests/{digest}"), 403, "DENIED")
    assert (await http.get("/v2/team-a/app/manifests/v1.0")).content == raw
    # mutable tags still move and delete
    await push_image(http, "team-a/app", "latest", [b"three"])
    assert (await http.delete("/v2/team-a/app/manifests/latest")).status_code == 202


async def test_throttle_after_failed_logins(http: httpx.AsyncClient) -> None:
    for _ in range(5):
        assert_error(await http.get("/auth/token", auth=("alice", "guess")), 401, "UNAUTHORIZED")
    locked = await http.get("/auth/token", auth=("alice", "alice-pw"))
    assert_error(locked, 429, "TOOMANYREQUESTS")
    assert 1 <= int(locked.headers["retry-after"]) <= 300
    assert_error(await http.get("/v2/", auth=("alice", "alice-pw")), 429, "TOOMANYREQUESTS")
    form = {"grant_type": "password", "username": "alice", "password": "alice-pw"}
    assert_error(await http.post("/auth/token", data=form), 429, "TOOMANYREQUESTS")


async def test_basic_mode_throttles_too(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        username="u",
        password="p",
        auth=AuthSettings(max_failed_logins=3),
        _env_file=None,
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        for _ in range(3):
            assert_error(await client.get("/v2/", auth=("u", "x")), 401, "UNAUTHORIZED")
        assert_error(await client.get("/v2/", auth=("u", "p")), 429, "TOOMANYREQUESTS")
        assert (await client.get("/auth/token")).status_code == 404  # no token endpoint


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


async def test_audit_log(http: httpx.AsyncClient, issuer: Issuer) -> None:
    lines = Lines()
    logging.getLogger("registry.audit").addHandler(lines)
    try:
        http.auth = AsUser(http, "alice")
        digest, raw = await push_image(http, "team-a/app", "v1", [b"audited"])
        http.auth = AsUser(http, "bob")
        await http.put(
            "/v2/team-a/app/manifests/v2", content=raw, headers={"Content-Type": OCI_MANIFEST}
        )
        http.auth = httpx.Auth()  # none
        token = (await get_token(http, ("oidc", issuer.mint()), "repository:my-org/app/x:push"))[
            "token"
        ]
        await http.post("/v2/my-org/app/x/blobs/uploads/", headers=bearer(token))
        await http.get("/v2/", auth=("alice", "wrong"))
    finally:
        logging.getLogger("registry.audit").removeHandler(lines)
    put = next(line for line in lines.lines if line["action"] == "put_manifest")
    assert put["who"] == {"kind": "user", "subject": "alice"}
    assert put["repository"] == "team-a/app" and put["tag"] == "v1"
    assert put["digest"] == digest and put["result"] == "ok" and put["status"] == 201
    blob = [line for line in lines.lines if line["method"] == "PUT" and "digest" in line]
    assert len(blob) >= 3  # config, layer, manifest
    refused = [line for line in lines.lines if line["result"] == "denied"]
    assert refused[0]["who"] == {"kind": "user", "subject": "bob"}
    assert refused[0]["status"] == 403 and refused[0]["tag"] == "v2"
    ci = next(line for line in lines.lines if line["repository"] == "my-org/app/x")
    assert ci["who"]["kind"] == "oidc" and ci["who"]["repository"] == "my-org/app"
    assert ci["who"]["ref"] == "refs/heads/main" and ci["who"]["issuer"] == issuer.url
    grants = [line for line in lines.lines if line["action"] == "token_get" and "granted" in line]
    assert any(g["granted"] == "repository:my-org/app/x:push" for g in grants)
    assert refused[-1]["status"] == 401
    assert refused[-1]["who"] == {"kind": "unknown", "attempted": "alice"}


async def test_basic_mode_with_a_policy_file(token_settings: Settings) -> None:
    settings = token_settings.model_copy(
        update={"auth": token_settings.auth.model_copy(update={"mode": "basic"})}
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        challenge = await client.get("/v2/")
        assert challenge.headers["www-authenticate"].startswith("Basic ")
        client.auth = ("alice", "alice-pw")
        await push_image(client, "team-a/app", "1", [b"basic"])
        client.auth = ("bob", "bob-pw")
        assert (await client.get("/v2/team-a/app/manifests/1")).status_code == 200
        assert_error(await client.post("/v2/team-a/app/blobs/uploads/"), 403, "DENIED")
        client.auth = ("bob", "wrong")
        assert_error(await client.get("/v2/team-a/app/manifests/1"), 401, "UNAUTHORIZED")
        client.auth = httpx.Auth()
        assert (await client.get("/auth/token")).status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"scope": "repository:UPPER/case:pull"},
        {"scope": "repository::pull"},
        {"scope": "repository:a/b:"},
        {"scope": "nonsense"},
        {"scope": "repository:a:b:c:pull " * 200},
        {"scope": "registry:catalog:pull"},
        {"offline_token": "maybe"},
    ],
)
async def test_hostile_token_requests_grant_nothing(
    http: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await http.get("/auth/token", params=params, auth=("bob", "bob-pw"))
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
    assert claims["access"] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"\xff\xfe", 400, "UNSUPPORTED"),
        (b"grant_type=password&" + b"a=1&" * 100, 400, "UNSUPPORTED"),
        (b"grant_type=" + b"x" * 70_000, 413, "UNSUPPORTED"),
        (b"grant_type=password&username=alice", 401, "UNAUTHORIZED"),
        (b"grant_type=refresh_token&refresh_token=abc", 401, "UNAUTHORIZED"),
    ],
)
async def test_hostile_token_forms(
    http: httpx.AsyncClient, body: bytes, status: int, code: str
) -> None:
    response = await http.post(
        "/auth/token",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, status, code)


@pytest.mark.parametrize(
    "header", ["Basic !!!", "Bearer", "Bearer a.b.c", "Negotiate xyz", "Basic " + "A" * 9000]
)
async def test_hostile_authorization_headers(http: httpx.AsyncClient, header: str) -> None:
    assert_error(
        await http.get("/v2/team-a/x/tags/list", headers={"Authorization": header}),
        401,
        "UNAUTHORIZED",
    )


async def test_token_mode_without_a_policy_file(tmp_path: Path) -> None:
    """The env user (or htpasswd users) may do everything, now through tokens."""
    settings = Settings(
        data_dir=tmp_path / "d",
        username="u",
        password="p",
        auth=AuthSettings(mode="token"),
        _env_file=None,
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        challenge = await client.get("/v2/")
        assert 'service="registry"' in challenge.headers["www-authenticate"]
        body = await get_token(
            client, ("u", "p"), "repository:any/thing:pull,push,delete", service="registry"
        )
        claims = jwt.decode(body["token"], options={"verify_signature": False})
        assert claims["access"][0]["actions"] == ["pull", "push", "delete"]
        client.headers.update(bearer(body["token"]))
        await push_image(client, "any/thing", "1", [b"x"])
    assert (tmp_path / "d" / "auth" / "token-signing-key.pem").is_file()
