"""HTTP Basic authentication against bcrypt hashes (htpasswd files and/or one configured user).

bcrypt costs milliseconds of CPU by design; verifying it on every request would make a
registry CPU-bound on authentication. Successfully verified credentials are remembered for a
short time, keyed by a keyed hash of the header (never the password itself), so repeated
requests cost one dictionary lookup; failures are never cached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path

import bcrypt

CACHE_SECONDS = 60.0
CACHE_ENTRIES = 4096
GENERATED_USER = "admin"
# A valid hash of a random password: unknown users cost as much as known ones.
_DUMMY_HASH = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt())


def parse_htpasswd(text: str) -> dict[str, bytes]:
    """``user:hash`` lines (bcrypt ``$2y$``/``$2b$``/``$2a$`` hashes); others are ignored."""
    users: dict[str, bytes] = {}
    for line in text.splitlines():
        user, sep, hashed = line.strip().partition(":")
        if (
            sep
            and user
            and not user.startswith("#")
            and hashed.startswith(("$2y$", "$2b$", "$2a$"))
        ):
            users[user] = hashed.encode()
    return users


def hash_password(password: str) -> str:
    """An htpasswd-compatible bcrypt hash."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def ensure_generated_user(htpasswd: Path) -> str | None:
    """Create ``admin`` with a random password in ``htpasswd`` if the file does not exist.

    Returns the new password (to print once), or None if the file already existed. Only the
    bcrypt hash is stored.
    """
    if htpasswd.exists():
        return None
    password = secrets.token_urlsafe(18)
    htpasswd.parent.mkdir(parents=True, exist_ok=True)
    temporary = htpasswd.with_name(f".{htpasswd.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(f"{GENERATED_USER}:{hash_password(password)}\n")
        file.flush()
        os.fsync(file.fileno())
    try:
        os.link(temporary, htpasswd)  # fails if another process created it first
    except FileExistsError:
        return None
    finally:
        temporary.unlink()
    return password


class PasswordChecker:
    """Basic credentials checked against users' passwords; who may do what is the policy's.

    ``users`` maps names to bcrypt hashes (htpasswd); ``plain_users`` to passwords given in
    the configuration, compared in constant time without the cost of bcrypt.
    """

    def __init__(self, users: dict[str, bytes], plain_users: dict[str, str] | None = None) -> None:
        self.users = users
        self.plain_users = {
            user: hashlib.sha256(password.encode()).digest()
            for user, password in (plain_users or {}).items()
        }
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    async def authenticate(self, authorization: str) -> str | None:
        """The user whose Basic credentials these are, or None."""
        key = hmac.digest(self._key, authorization.encode("latin-1", "replace"), hashlib.sha256)
        cached = self._verified.get(key)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        user = await asyncio.to_thread(self._check, authorization)
        if user is not None:
            self._verified[key] = (user, now + CACHE_SECONDS)
            self._verified.move_to_end(key)
            while len(self._verified) > CACHE_ENTRIES:
                self._verified.popitem(last=False)
        return user

    def _check(self, authorization: str) -> str | None:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            return None
        plain = self.plain_users.get(user)
        if plain is not None:
            given = hashlib.sha256(password.encode()).digest()
            return user if hmac.compare_digest(given, plain) else None
        hashed = self.users.get(user)
        matches = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH)
        return user if matches and hashed is not None else None
