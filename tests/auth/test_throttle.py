"""The login throttle: a window per client, a lockout with Retry-After, other clients free."""

from __future__ import annotations

import pytest

from registry.auth.throttle import LoginThrottle
from registry.oci.errors import RegistryError


def test_lockout_and_expiry() -> None:
    now = [1000.0]
    limiter = LoginThrottle(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        limiter.check("10.0.0.1")
        limiter.failed("10.0.0.1")
    now[0] += 20
    with pytest.raises(RegistryError) as locked:
        limiter.check("10.0.0.1")
    assert locked.value.status == 429 and locked.value.headers["Retry-After"] == "40"
    limiter.check("10.0.0.2")  # another client is not affected
    now[0] += 40
    limiter.check("10.0.0.1")  # the window has passed


def test_failures_spread_out_do_not_lock() -> None:
    now = [0.0]
    limiter = LoginThrottle(limit=2, window=10, clock=lambda: now[0])
    for _ in range(5):
        limiter.failed("c")
        now[0] += 11
        limiter.check("c")
