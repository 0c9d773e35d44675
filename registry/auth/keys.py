"""The key the registry signs its tokens with: from a PEM file, or generated on first start.

A generated key is an EC P-256 key (ES256), written once under the data folder with mode
0600 (by link, so concurrent workers agree on one key). A configured file may hold an EC
P-256 key (ES256) or an RSA key of at least 2048 bits (RS256).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SigningAlgorithm = Literal["ES256", "RS256"]


class SigningKeyError(ValueError):
    """The signing key file is unusable."""


@dataclass(frozen=True)
class SigningKey:
    """A private key, the JWS algorithm it signs with, and its key id."""

    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    algorithm: SigningAlgorithm
    kid: str

    @property
    def public(self) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        return self.private.public_key()


def _kid(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:15]).decode()


def parse_signing_key(pem: bytes) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise SigningKeyError(f"not an unencrypted PEM private key: {error}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return SigningKey(key, "ES256", _kid(key))
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return SigningKey(key, "RS256", _kid(key))
    raise SigningKeyError("the signing key must be EC P-256 or RSA of at least 2048 bits")


def load_or_create_signing_key(path: Path) -> SigningKey:
    """The key in ``path``, creating an EC P-256 key there first if there is none."""
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # another worker may have won: use its key
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return parse_signing_key(path.read_bytes())
