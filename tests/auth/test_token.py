"""Registry tokens: what they carry, and every way a forged or stale one is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from registry.auth.base import ANONYMOUS, Identity
from registry.auth.keys import SigningKeyError, load_or_create_signing_key, parse_signing_key
from registry.auth.token import Scope, TokenAuthority, TokenError

OIDC = Identity("repo:o/a:ref:refs/heads/main", "oidc", "https://issuer", (("ref", "refs/x"),))


@pytest.fixture
def authority(tmp_path: Path) -> TokenAuthority:
    key = load_or_create_signing_key(tmp_path / "key.pem")
    return TokenAuthority(key, "reg-issuer", "reg-service", 300, 3600)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(
    header: Mapping[str, object], claims: Mapping[str, object], signature: bytes = b""
) -> str:
    return ".".join(
        (_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature))
    )


def test_round_trip(authority: TokenAuthority) -> None:
    token = authority.issue(
        Identity("alice"),
        [Scope("repository", "team/app", ("pull", "push")), Scope("registry", "catalog", ("*",))],
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == authority.key.kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "reg-issuer" and claims["aud"] == "reg-service"
    assert claims["exp"] - claims["iat"] == 300 and claims["nbf"] <= claims["iat"]
    assert claims["access"][0] == {
        "type": "repository",
        "name": "team/app",
        "actions": ["pull", "push"],
    }
    verified = authority.verify(token)
    assert verified.identity == Identity("alice")
    assert verified.access == {"team/app": frozenset({"pull", "push"})}
    assert verified.registry_access


def test_oidc_identity_survives(authority: TokenAuthority) -> None:
    assert authority.verify(authority.issue(OIDC, [])).identity == OIDC
    assert authority.verify_refresh(authority.issue_refresh(OIDC)) == OIDC
    assert authority.verify(authority.issue(ANONYMOUS, [])).identity == ANONYMOUS


def test_oidc_refresh_tokens_live_an_hour_at_most(authority: TokenAuthority) -> None:
    def lifetime(token: str) -> int:
        claims = jwt.decode(token, options={"verify_signature": False})
        return int(claims["exp"] - claims["iat"])

    assert lifetime(authority.issue_refresh(OIDC)) == 3600
    assert lifetime(authority.issue_refresh(Identity("alice"))) == authority.refresh_ttl == 3600
    long = TokenAuthority(authority.key, "i", "s", 60, 86_400)
    assert lifetime(long.issue_refresh(OIDC)) == 3600
    assert lifetime(long.issue_refresh(Identity("alice"))) == 86_400


def test_refresh_and_access_tokens_are_not_interchangeable(authority: TokenAuthority) -> None:
    with pytest.raises(TokenError, match="access"):
        authority.verify(authority.issue_refresh(Identity("alice")))
    with pytest.raises(TokenError, match="refresh"):
        authority.verify_refresh(authority.issue(Identity("alice"), []))


def _claims(authority: TokenAuthority, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": authority.issuer,
        "aud": authority.service,
        "sub": "mallory",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "use": "access",
        "kind": "user",
        "access": [{"type": "repository", "name": "x", "actions": ["push"]}],
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(authority: TokenAuthority, **overrides: object) -> str:
    key = authority.key
    return jwt.encode(_claims(authority, **overrides), key.private, algorithm=key.algorithm)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "Expired"),
        ({"nbf": int(time.time()) + 3600}, "ImmatureSignature"),
        ({"aud": "other-service"}, "InvalidAudience"),
        ({"iss": "someone-else"}, "InvalidIssuer"),
        ({"exp": None}, "MissingRequiredClaim"),
        ({"kind": "admin"}, "kind"),
    ],
)
def test_bad_claims_are_refused(
    authority: TokenAuthority, overrides: dict[str, object], reason: str
) -> None:
    with pytest.raises(TokenError, match=reason):
        authority.verify(_sign(authority, **overrides))


def test_alg_none_is_refused(authority: TokenAuthority) -> None:
    with pytest.raises(TokenError):
        authority.verify(_forge({"alg": "none", "typ": "JWT"}, _claims(authority)))


def test_hmac_with_the_public_key_is_refused(authority: TokenAuthority) -> None:
    """The classic confusion: HS256 keyed with the (public) verification key."""
    public_pem = authority.key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT"}
    unsigned = _forge(header, _claims(authority)).rsplit(".", 1)[0]
    signature = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
    with pytest.raises(TokenError, match="InvalidAlgorithm"):
        authority.verify(f"{unsigned}.{_b64(signature)}")


def test_other_key_and_tampering_are_refused(authority: TokenAuthority) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenError, match="InvalidSignature"):
        authority.verify(jwt.encode(_claims(authority), other, algorithm="ES256"))
    good = authority.issue(Identity("alice"), [Scope("repository", "a", ("pull",))])
    head, _, signature = good.split(".")
    widened = _b64(json.dumps(_claims(authority, sub="alice")).encode())
    with pytest.raises(TokenError):
        authority.verify(f"{head}.{widened}.{signature}")
    with pytest.raises(TokenError):
        authority.verify("not-a-token")


def test_generated_key_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "key.pem"
    first = load_or_create_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_signing_key(path).kid == first.kid
    assert first.algorithm == "ES256"


def test_rsa_key_from_file_signs_rs256(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signing = parse_signing_key(pem)
    assert signing.algorithm == "RS256"
    authority = TokenAuthority(signing, "i", "s", 60, 60)
    assert authority.verify(authority.issue(Identity("a"), [])).identity.subject == "a"
    with pytest.raises(SigningKeyError):
        parse_signing_key(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    small = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SigningKeyError, match="P-256"):
        parse_signing_key(small)
