"""glibc's allocator statistics (``mallinfo2``), for probes run in a subprocess of their own.

Kept free of other imports: a probe that imports this measures the allocator as its own code
left it.
"""

from __future__ import annotations

import ctypes

MIB = 1024 * 1024


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]  # fmt: skip


def mallinfo2() -> MallInfo2:
    function = ctypes.CDLL(None).mallinfo2
    function.restype = MallInfo2
    info: MallInfo2 = function()
    return info


def mapped_for_buffers() -> int:
    """Bytes glibc maps for four 1 MiB buffers held at once (0 if they are in the heap)."""
    before = mallinfo2().hblkhd
    buffers = [bytearray(MIB) for _ in range(4)]
    mapped = mallinfo2().hblkhd - before
    del buffers
    return int(mapped)
