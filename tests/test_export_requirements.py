"""scripts/export-requirements.py: the image's hash-pinned requirements from poetry.lock."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "export-requirements.py"


def export(lock: Path) -> str:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(lock)], capture_output=True, text=True, check=True
    ).stdout


def test_lists_the_main_group_with_every_hash_and_marker() -> None:
    lock = tomllib.loads((ROOT / "poetry.lock").read_text())
    out = export(ROOT / "poetry.lock")
    pins = {line.split(" ")[0] for line in out.splitlines() if not line.startswith(" ")}
    main = {p["name"] + "==" + p["version"] for p in lock["package"] if "main" in p["groups"]}
    assert pins == main
    assert "fastapi==" in out and "pytest==" not in out and "mypy==" not in out
    uvloop = next(p for p in lock["package"] if p["name"] == "uvloop")
    assert f"uvloop=={uvloop['version']} ; {uvloop['markers']}" in out
    assert out.count("--hash=sha256:") == sum(
        len(p["files"]) for p in lock["package"] if "main" in p["groups"]
    )


def test_a_package_without_hashes_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "poetry.lock"
    lock.write_text('[[package]]\nname = "x"\nversion = "1"\ngroups = ["main"]\nfiles = []\n')
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(lock)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "x has no hashes" in result.stderr
