"""Regenerate poetry.lock on machines whose package index serves only the simple API.

Poetry's default PyPI source needs the index's JSON API. This script locks against the
same index through its simple API (a temporary "legacy" source), then drops that
source again so that the committed lock names packages only, and refreshes the lock's
content hash. Run it after editing the dependencies in pyproject.toml.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pip._internal.models.index import PyPI  # the index pip itself uses

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "poetry.lock"
SOURCE_NAME = "lock-deps-simple-index"


def main() -> int:
    original = PYPROJECT.read_text()
    temporary_source = (
        f'\n[[tool.poetry.source]]\nname = "{SOURCE_NAME}"\n'
        f'url = "{PyPI.simple_url}"\npriority = "primary"\n'
    )
    try:
        PYPROJECT.write_text(original + temporary_source)
        subprocess.run(["poetry", "lock", "--regenerate"], cwd=ROOT, check=True)
    finally:
        PYPROJECT.write_text(original)
    lock = re.sub(r"\n\[package\.source\]\n(?:[a-z]+ = .*\n)+", "", LOCK.read_text())
    LOCK.write_text(lock)
    # Recompute the content hash for the pyproject.toml without the temporary source.
    from poetry.factory import Factory

    poetry = Factory().create_poetry(ROOT)
    content_hash = poetry.locker._get_content_hash()
    LOCK.write_text(re.sub(r'content-hash = "[0-9a-f]+"', f'content-hash = "{content_hash}"', lock))
    subprocess.run(["poetry", "check", "--lock"], cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
