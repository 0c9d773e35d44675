"""Brute-force protection: too many failed logins from one client lock it out for a while.

Counted per client address and per process (each worker keeps its own counts). A client
that reaches ``limit`` failures within ``window`` seconds gets ``TOOMANYREQUESTS`` with
``Retry-After`` on every request that carries credentials, right or wrong, until the window
since its first failure has passed. A success does not reset the count (one known account
must not open the door to guessing others).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from registry.oci.errors import ErrorCode, RegistryError

MAX_CLIENTS = 65_536


class LoginThrottle:
    """Failed-login counts per client within a sliding window."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()  # start, count

    def _current(self, client: str, now: float) -> tuple[float, int] | None:
        entry = self._failures.get(client)
        if entry is not None and now - entry[0] >= self.window:
            del self._failures[client]
            return None
        return entry

    def check(self, client: str) -> None:
        """Raise ``TOOMANYREQUESTS`` if ``client`` is locked out."""
        now = self.clock()
        entry = self._current(client, now)
        if entry is not None and entry[1] >= self.limit:
            retry = max(1, math.ceil(entry[0] + self.window - now))
            raise RegistryError(
                ErrorCode.TOOMANYREQUESTS,
                {"reason": "too many failed logins", "retry_after": retry},
                headers={"Retry-After": str(retry)},
            )

    def failed(self, client: str) -> None:
        now = self.clock()
        entry = self._current(client, now)
        self._failures[client] = (now, 1) if entry is None else (entry[0], entry[1] + 1)
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_CLIENTS:
            self._failures.popitem(last=False)
