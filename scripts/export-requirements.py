"""Print the runtime requirements pinned in poetry.lock, with their hashes, for pip.

The image build uses this instead of ``poetry export --only main`` so that the build stage
needs nothing but the base image's Python (3.11+, for ``tomllib``):

    python3 scripts/export-requirements.py poetry.lock > requirements.txt
    pip wheel --require-hashes --only-binary=:all: -r requirements.txt -w wheelhouse

Only packages of the ``main`` group are listed; a package's environment marker from the lock
is kept, so pip skips what the target platform does not need.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any


def requirements(lock: dict[str, Any], group: str = "main") -> list[str]:
    """One ``name==version ; marker --hash=...`` line per package of ``group``, sorted by name."""
    lines = []
    for package in sorted(lock["package"], key=lambda p: str(p["name"])):
        if group not in package.get("groups", ["main"]):
            continue
        line = f"{package['name']}=={package['version']}"
        if package.get("markers"):
            line += f" ; {package['markers']}"
        hashes = sorted(str(file["hash"]) for file in package["files"])
        if not hashes:
            raise ValueError(f"{package['name']} has no hashes in the lock")
        lines.append(" \\\n    ".join([line, *(f"--hash={h}" for h in hashes)]))
    return lines


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "poetry.lock")
    with path.open("rb") as file:
        lock = tomllib.load(file)
    print("\n".join(requirements(lock)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
