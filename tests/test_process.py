"""Per-process set-up: the allocator keeps freed blob buffers for reuse."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Allocates and frees 1 MiB buffers (as blob reads do) and prints how many bytes glibc holds
# in mmap'ed chunks while one is alive, and how much free memory the heap kept afterwards.
PROBE = """
import ctypes, sys
from registry.process import keep_buffers_in_heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert keep_buffers_in_heap()
buffers = [bytearray(1024 * 1024) for _ in range(4)]
mapped = mallinfo2().hblkhd
del buffers
print(mapped, mallinfo2().fordblks)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_blob_buffers_come_from_the_heap_and_stay_for_reuse() -> None:
    def probe(mode: str) -> tuple[int, int]:
        output = subprocess.run(
            [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
        ).stdout
        mapped, free = output.split()
        return int(mapped), int(free)

    default_mapped, default_free = probe("default")
    tuned_mapped, tuned_free = probe("tuned")
    assert default_mapped >= 4 * 1024 * 1024  # by default each buffer is its own mapping
    assert tuned_mapped < 1024 * 1024  # tuned: from the heap ...
    assert tuned_free >= 4 * 1024 * 1024 > default_free  # ... and kept there when freed


def test_first_request_modules_are_imported_and_a_moved_one_is_skipped() -> None:
    probe = (
        "import importlib, sys\n"
        "from registry.process import import_first_request_modules\n"
        "import_first_request_modules()\n"
        "assert 'anyio._backends._asyncio' in sys.modules and 'uvloop' in sys.modules\n"
        "def moved(name, *args):\n"
        "    raise ImportError(name)\n"
        "importlib.import_module = moved\n"
        "import_first_request_modules()  # a release that moved it: no error\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr
