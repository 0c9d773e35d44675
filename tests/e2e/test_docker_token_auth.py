"""The real docker CLI against token mode: ``docker login`` with a password and with an OIDC
ID token from a local issuer, push and pull, and 403 where the policy says no."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from tests.e2e.conftest import Docker, Server, start_registry
from tests.oidc_issuer import AUDIENCE, Issuer, running_issuer

pytestmark = pytest.mark.e2e


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with running_issuer() as issuer:
        yield issuer


@pytest.fixture
def token_server(tmp_path: Path, issuer: Issuer) -> Iterator[Server]:
    hashed = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(4)).decode()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""
users: {{alice: "{hashed}"}}
rules:
  - {{repositories: ["team-a/**", "public/*"], users: [alice], actions: [pull, push, delete]}}
  - {{repositories: ["public/*"], anonymous: true, actions: [pull]}}
oidc:
  - issuer: {issuer.url}
    audience: {AUDIENCE}
    rules:
      - conditions: {{repository: my-org/app, ref: refs/heads/main}}
        repositories: ["my-org/app/**"]
        actions: [pull, push]
"""
    )
    server = start_registry(
        tmp_path / "data",
        tmp_path / "registry.log",
        REGISTRY_AUTH__MODE="token",
        REGISTRY_AUTH__POLICY_FILE=str(policy),
        REGISTRY_AUTH__SERVICE="registry.test",
        REGISTRY_AUTH__OIDC_ALLOW_HTTP="true",
        REGISTRY_AUTH__AUDIT_LOG=str(tmp_path / "audit.log"),
    )
    yield server
    server.stop()


def denied(result: object) -> bool:
    text = f"{getattr(result, 'stdout', '')}{getattr(result, 'stderr', '')}".lower()
    return getattr(result, "returncode", 0) != 0 and "denied" in text


def test_login_push_pull_with_tokens(docker: Docker, token_server: Server, tmp_path: Path) -> None:
    host = token_server.host
    tag = uuid.uuid4().hex[:8]
    image, other = f"{host}/team-a/app:{tag}", f"{host}/team-b/app:{tag}"
    public = f"{host}/public/base:{tag}"
    docker.build_image(image, tmp_path / "context", layers=2)
    docker.run("tag", image, other)
    try:
        assert docker.login(host, "alice", "wrong", check=False).returncode != 0
        docker.login(host, "alice", "alice-pw")
        pushed = docker.run("push", image).stdout
        assert "digest: sha256:" in pushed
        docker.run("rmi", image)
        assert "Digest: sha256:" in docker.run("pull", image).stdout
        assert denied(docker.run("push", other, check=False))
        docker.run("tag", image, public)
        docker.run("push", public)
        docker.run("logout", host)
        docker.run("rmi", image, public)
        assert "Digest: sha256:" in docker.run("pull", public).stdout  # anonymous token
        assert docker.run("pull", image, check=False).returncode != 0
    finally:
        docker.run("rmi", "-f", image, other, public, check=False)
    audit = (tmp_path / "audit.log").read_text()
    assert '"action":"put_manifest"' in audit and '"subject":"alice"' in audit
    assert '"status":403' in audit
    assert '"action":"token_post"' in audit  # docker exchanged its refresh token


def test_login_with_an_oidc_id_token(
    docker: Docker, token_server: Server, issuer: Issuer, tmp_path: Path
) -> None:
    host = token_server.host
    tag = uuid.uuid4().hex[:8]
    image, elsewhere = f"{host}/my-org/app/api:{tag}", f"{host}/team-a/app:{tag}"
    docker.build_image(image, tmp_path / "context", layers=1)
    docker.run("tag", image, elsewhere)
    try:
        refused = docker.login(host, "oidc", issuer.mint(ref="refs/heads/feature"), check=False)
        assert refused.returncode != 0
        docker.login(host, "oidc", issuer.mint())
        assert "digest: sha256:" in docker.run("push", image).stdout
        assert denied(docker.run("push", elsewhere, check=False))
        docker.run("rmi", image)
        docker.run("pull", image)
    finally:
        docker.run("rmi", "-f", image, elsewhere, check=False)
    audit = (tmp_path / "audit.log").read_text()
    assert '"kind":"oidc"' in audit and '"repository":"my-org/app"' in audit
