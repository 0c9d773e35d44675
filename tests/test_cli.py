"""The command line: settings errors are one clear line; the first start prints a password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "registry", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_invalid_settings_stop_with_one_line(tmp_path: Path) -> None:
    result = run_cli({"REGISTRY_PORT": "not-a-port"}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "REGISTRY_PORT" in lines[0]
    assert "Traceback" not in result.stderr


def test_user_needs_both_name_and_password(tmp_path: Path) -> None:
    result = run_cli({"REGISTRY_USERNAME": "x"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "REGISTRY_PASSWORD" in result.stderr and "Traceback" not in result.stderr


def test_hash_password_prints_an_htpasswd_line(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    result = subprocess.run(
        [sys.executable, "-m", "registry", "hash-password", "carol"],
        input="hunter2\n",
        env={**clean, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    user, _, hashed = result.stdout.strip().partition(":")
    assert user == "carol" and hashed.startswith("$2b$")


def test_invalid_policy_file_stops_with_one_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("users: {alice: not-a-hash}\n")
    env = {"REGISTRY_AUTH__MODE": "token", "REGISTRY_AUTH__POLICY_FILE": str(policy)}
    result = run_cli({**env, "REGISTRY_DATA_DIR": str(tmp_path / "d")}, cwd=tmp_path)
    assert result.returncode == 2
    assert "bcrypt" in result.stderr and "Traceback" not in result.stderr
    missing = run_cli({"REGISTRY_AUTH__POLICY_FILE": str(tmp_path / "nope.yaml")}, cwd=tmp_path)
    assert missing.returncode == 2 and "REGISTRY_AUTH__POLICY_FILE" in missing.stderr
    http = tmp_path / "http.yaml"
    http.write_text(
        "oidc: [{issuer: 'http://127.0.0.1:1', audience: a, rules: "
        "[{conditions: {sub: x}, repositories: ['a'], actions: [pull]}]}]\n"
    )
    insecure = run_cli(
        {"REGISTRY_AUTH__POLICY_FILE": str(http), "REGISTRY_DATA_DIR": str(tmp_path / "d")},
        cwd=tmp_path,
    )
    assert insecure.returncode == 2 and "HTTPS" in insecure.stderr


def _blob(data_dir: Path, content: bytes, name: str | None = None) -> Path:
    import hashlib

    digest = name or hashlib.sha256(content).hexdigest()
    path = data_dir / f"docker/registry/v2/blobs/sha256/{digest[:2]}/{digest}/data"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return path


def test_gc_removes_unreferenced_blobs_and_reports_json(tmp_path: Path) -> None:
    import json

    data_dir = tmp_path / "data"
    orphan = _blob(data_dir, b"nobody references me")
    env = {"REGISTRY_DATA_DIR": str(data_dir), "REGISTRY_USERNAME": "u", "REGISTRY_PASSWORD": "p"}
    dry = run_cli(env, "gc", "--dry-run", "--json", "--grace", "0", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["blobs_removed"] == 1 and orphan.exists()
    result = run_cli(env, "gc", "--grace", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "removed 1 (20 B freed)" in result.stdout and not orphan.exists()


def test_scrub_finds_and_quarantines_a_corrupt_blob(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _blob(data_dir, b"fine")
    bad = _blob(data_dir, b"tampered", name="ab" + "0" * 62)
    env = {"REGISTRY_DATA_DIR": str(data_dir), "REGISTRY_USERNAME": "u", "REGISTRY_PASSWORD": "p"}
    moved = run_cli(env, "scrub", "--quarantine", cwd=tmp_path)
    assert moved.returncode == 1 and "2 blobs" in moved.stdout, moved.stderr
    assert "CORRUPT sha256:ab000" in moved.stdout and "(quarantined)" in moved.stdout
    assert not bad.exists()
    assert (data_dir / f"docker/registry/v2/_quarantine/sha256/{'ab' + '0' * 62}").exists()
    assert run_cli(env, "scrub", cwd=tmp_path).returncode == 0


def test_workers_follow_the_cpu_affinity_and_the_cgroup_quota(tmp_path: Path) -> None:
    from registry.__main__ import available_cpus

    allowed = len(os.sched_getaffinity(0))
    root, membership = tmp_path / "cgroup", tmp_path / "self-cgroup"
    nested = root / "system.slice" / "registry.service"
    nested.mkdir(parents=True)
    membership.write_text("0::/system.slice/registry.service\n")
    assert available_cpus(tmp_path / "no-cgroup", tmp_path / "none") == allowed
    assert available_cpus(root, membership) == allowed  # no cpu.max files: no quota
    (root / "cpu.max").write_text("max 100000\n")
    (nested / "cpu.max").write_text("max 100000\n")
    assert available_cpus(root, membership) == allowed
    (nested / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one worker
    assert available_cpus(root, membership) == 1
    (nested / "cpu.max").write_text("max 100000\n")
    (root / "system.slice" / "cpu.max").write_text("100000 100000\n")  # a parent's quota
    assert available_cpus(root, membership) == 1
    (root / "system.slice" / "cpu.max").write_text(f"{(allowed + 3) * 100000} 100000\n")
    assert available_cpus(root, membership) == allowed  # a quota above the affinity mask
    membership.write_text("0::/\n")  # inside a container's own cgroup namespace
    (root / "cpu.max").write_text("100000 100000\n")
    assert available_cpus(root, membership) == 1
