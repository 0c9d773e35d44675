"""The GitHub Actions workflows, the GCP set-up script and the compose file, checked statically.

actionlint (with shellcheck for every ``run:`` block) lints the workflows; the assertions pin
down the properties the release depends on: keyless auth, pinned actions, immutable tags.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
SHELL_SCRIPTS = [
    ROOT / "deploy" / "gcp" / "setup.sh",
    ROOT / "scripts" / "make-base-images.sh",
    ROOT / "scripts" / "check-reproducible.sh",
    ROOT / "scripts" / "setup-venv.sh",
    ROOT / ".ci" / "run",
]
USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", re.MULTILINE)


def require_tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"required in CI: {name}")
        pytest.skip(f"{name} is not installed")
    return found


def test_actionlint_and_shellcheck_pass() -> None:
    actionlint = require_tool("actionlint")
    require_tool("shellcheck")  # actionlint runs it on every run: block when it is on PATH
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 2
    result = subprocess.run(
        [actionlint, "-shellcheck", shutil.which("shellcheck") or "shellcheck", *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    actionlint = require_tool("actionlint")
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: echo "${{ github.event.pull_request.title }}" && [ $X = 1 ]\n'
    )
    result = subprocess.run([actionlint, str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "github.event.pull_request.title" in result.stdout


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run(
        [shellcheck, *map(str, SHELL_SCRIPTS)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_every_action_is_pinned_by_full_commit_sha(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    uses = USES.findall(text)
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), action
        assert re.search(r"#\s*v\d+(\.\d+)*", comment), f"{action}: no version comment"


def test_release_is_keyless() -> None:
    text = (WORKFLOWS / "release.yml").read_text()
    # The publishing job may mint an OIDC token; the workflow default stays read-only.
    assert re.search(r"^permissions:\n  contents: read\n(?!  id-token)", text, re.MULTILINE)
    assert re.search(r"permissions:\n\s+contents: read\n\s+id-token: write", text)
    assert "workload_identity_provider:" in text and "service_account:" in text
    assert "token_format: access_token" in text
    assert "username: oauth2accesstoken" in text
    assert "password: ${{ steps.auth.outputs.access_token }}" in text
    for key_material in ("credentials_json", "GOOGLE_APPLICATION_CREDENTIALS", "private_key"):
        assert key_material not in text
    assert "secrets." not in text  # every GCP setting is a plain repository variable


def test_release_builds_signs_and_checks_reproducibility() -> None:
    text = (WORKFLOWS / "release.yml").read_text()
    assert "platforms: linux/amd64,linux/arm64" in text
    assert "cache-from: type=gha" in text and "cache-to: type=gha,mode=max" in text
    assert "sbom: true" in text and "provenance: mode=max" in text
    assert "rewrite-timestamp=true" in text
    assert 'cosign sign --yes "${IMAGE}@${DIGEST}"' in text
    assert "scripts/check-reproducible.sh" in text
    assert "free-disk-space" in text
    # Tags by commit and version only: the repository's tags are immutable.
    assert ":latest" not in text
    assert set(re.findall(r'echo "\$\{IMAGE\}:([^"]+)"', text)) == {
        "sha-${GITHUB_SHA}",
        "${GITHUB_REF_NAME}",
    }


def test_ci_runs_lint_types_tests_and_the_delivery_stage() -> None:
    text = (WORKFLOWS / "ci.yml").read_text()
    for command in ("ruff check", "ruff format --check", "mypy", "pytest", "make delivery-test"):
        assert command in text
    assert re.search(r"delivery:\n\s+needs: test", text)
    assert "id-token" not in text


def test_gcp_setup_limits_who_can_publish() -> None:
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "PROJECT_ID": "p",
        "GITHUB_REPOSITORY": "acme/registry",
        "GITHUB_OWNER_ID": "4242",
        "PROJECT_NUMBER": "123",
    }
    out = subprocess.run(
        ["bash", str(ROOT / "deploy" / "gcp" / "setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    commands = [line for line in out.splitlines() if line.startswith("+ gcloud")]
    assert len(commands) == 7
    assert "--immutable-tags" in out
    assert "assertion.repository_owner_id\\ ==\\ \\'4242\\'" in out
    for claim in ("repository", "repository_owner_id", "ref", "workflow_ref"):
        assert f"attribute.{claim}=assertion.{claim}" in out
    writer = next(c for c in commands if "roles/artifactregistry.writer" in c)
    assert "artifacts repositories add-iam-policy-binding containers" in writer
    user = next(c for c in commands if "roles/iam.workloadIdentityUser" in c)
    assert user.endswith(
        "principalSet://iam.googleapis.com/projects/123/locations/global/"
        "workloadIdentityPools/github/attribute.repository/acme/registry"
    )
    assert "keys create" not in out


def test_compose_builds_on_the_dockerfiles_pinned_base() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base[1])
    compose = (ROOT / "docker-compose-local.yaml").read_text()
    assert f"${{PYTHON_BASE_IMAGE:-{base[1]}}}" in compose
    nginx = (ROOT / "deploy" / "config" / "nginx" / "registry.conf").read_text()
    for directive in (
        "client_max_body_size 0;",
        "proxy_request_buffering off;",
        "proxy_buffering off;",
        "chunked_transfer_encoding on;",
        "proxy_set_header X-Forwarded-Proto",
        "proxy_set_header X-Forwarded-For",
        "proxy_read_timeout 900s;",
    ):
        assert directive in nginx
