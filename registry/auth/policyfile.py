"""The access-policy file (YAML or TOML): its schema, patterns, and loading.

The whole format, with every key::

    users:  {alice: "$2b$12$..."}          # bcrypt hashes (htpasswd -B, hash-password)
    robots: {ci-deploy: "$2b$12$..."}      # robot accounts: same, reported as robots
    groups: {team-a: [alice, ci-deploy]}
    rules:                                 # grants add up; nothing is granted by default
      - repositories: ["team-a/**"]        # ``*`` one path segment, ``**`` any depth
        groups: [team-a]                   # and/or users: [...], robots: [...]
        actions: [pull, push, delete]
      - repositories: ["library/*"]
        anonymous: true                    # also callers without credentials
        actions: [pull]                    # (``authenticated: true``: anyone signed in)
    immutable_tags:
      - repositories: ["releases/**"]
        tags: ["v*"]                       # default: every tag
    oidc:                                  # trusted issuers of CI identity tokens
      - issuer: https://token.actions.githubusercontent.com
        audience: registry.example.com
        rules:
          - conditions: {repository: my-org/app, ref: [refs/heads/main, "refs/tags/v*"]}
            repositories: ["my-org/app/**"]
            actions: [pull, push]
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

ActionName = Literal["pull", "push", "delete"]
_PATTERN_CHARS = re.compile(r"^[a-z0-9._/*-]+$")
CLAIM_REFERENCE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
OIDC_USERNAME = "oidc"


class PolicyFileError(ValueError):
    """The policy file cannot be read or does not follow the format."""


@lru_cache(maxsize=1024)
def repository_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches within one path segment, ``**`` across segments; the rest is literal."""
    parts = re.split(r"(\*\*|\*)", pattern)
    body = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part) for part in parts
    )
    return re.compile(f"^{body}$")


@lru_cache(maxsize=1024)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A claim or tag glob: ``*`` matches any run of characters (``/`` included), ``?`` one."""
    parts = re.split(r"(\*|\?)", pattern)
    body = "".join(
        ".*" if part == "*" else "." if part == "?" else re.escape(part) for part in parts
    )
    return re.compile(f"^{body}$", re.DOTALL)


def _check_patterns(patterns: list[str]) -> list[str]:
    if not patterns:
        raise ValueError("at least one repository pattern is needed")
    for pattern in patterns:
        if not _PATTERN_CHARS.match(pattern) or "***" in pattern:
            raise ValueError(f"invalid repository pattern {pattern!r}")
    return patterns


def _check_claim_patterns(patterns: list[str]) -> list[str]:
    """Repository patterns that may name claims: ``ci/{repository}/**``."""
    _check_patterns([CLAIM_REFERENCE.sub("x", pattern) for pattern in patterns])
    return patterns


def _check_hash(users: dict[str, str]) -> dict[str, str]:
    for name, hashed in users.items():
        if not _NAME.match(name) or name == OIDC_USERNAME:
            raise ValueError(f"invalid account name {name!r}")
        if not hashed.startswith(("$2y$", "$2b$", "$2a$")):
            raise ValueError(f"{name}: the password must be given as a bcrypt hash")
    return users


Patterns = Annotated[list[str], AfterValidator(_check_patterns)]
ClaimPatterns = Annotated[list[str], AfterValidator(_check_claim_patterns)]
Accounts = Annotated[dict[str, str], AfterValidator(_check_hash)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """Who may do what on which repositories."""

    repositories: Patterns
    actions: Annotated[list[ActionName], Field(min_length=1)]
    users: list[str] = []
    groups: list[str] = []
    robots: list[str] = []
    anonymous: bool = False
    authenticated: bool = False


class ImmutableTags(_Strict):
    """Tags that, once set, never move and are never deleted."""

    repositories: Patterns
    tags: Annotated[list[str], Field(min_length=1)] = ["*"]


ClaimCondition = str | int | bool | Annotated[list[str | int], Field(min_length=1)]


class OidcRule(_Strict):
    """Tokens whose claims meet every condition get ``actions`` on ``repositories``."""

    conditions: Annotated[dict[str, ClaimCondition], Field(min_length=1)]
    repositories: ClaimPatterns  # ``{claim}`` stands for that claim's value, lower-cased
    actions: Annotated[list[ActionName], Field(min_length=1)]


class OidcIssuer(_Strict):
    """A trusted OpenID Connect issuer (GitHub Actions, GitLab, any provider)."""

    issuer: str
    audience: Annotated[str, Field(min_length=1)]
    jwks_uri: str | None = None  # default: from the issuer's discovery document
    algorithms: list[Literal["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]] = [
        "RS256",
        "ES256",
    ]
    rules: Annotated[list[OidcRule], Field(min_length=1)]

    @field_validator("issuer")
    @classmethod
    def _url(cls, issuer: str) -> str:
        if not issuer.startswith(("https://", "http://")) or issuer.rstrip("/") != issuer:
            raise ValueError(f"issuer must be a URL without a trailing slash: {issuer!r}")
        return issuer


class PolicyFile(_Strict):
    """The parsed, validated policy file."""

    users: Accounts = {}
    robots: Accounts = {}
    groups: dict[str, list[str]] = {}
    rules: list[Rule] = []
    immutable_tags: list[ImmutableTags] = []
    oidc: list[OidcIssuer] = []

    @model_validator(mode="after")
    def _references(self) -> PolicyFile:
        both = set(self.users) & set(self.robots)
        if both:
            raise ValueError(f"names used for both a user and a robot: {sorted(both)}")
        accounts = set(self.users) | set(self.robots)
        for group, members in self.groups.items():
            unknown = set(members) - accounts
            if unknown:
                raise ValueError(f"group {group}: unknown members {sorted(unknown)}")
        for number, rule in enumerate(self.rules, 1):
            for kind, names, known in (
                ("users", rule.users, self.users),
                ("robots", rule.robots, self.robots),
                ("groups", rule.groups, self.groups),
            ):
                unknown = set(names) - set(known)
                if unknown:
                    raise ValueError(f"rule {number}: unknown {kind} {sorted(unknown)}")
        issuers = [issuer.issuer for issuer in self.oidc]
        if len(set(issuers)) != len(issuers):
            raise ValueError("an OIDC issuer is listed twice")
        return self


def parse_policy(text: str, suffix: str) -> PolicyFile:
    """Parse policy text: TOML if ``suffix`` is ``.toml``, else YAML."""
    try:
        data: Any = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise PolicyFileError(f"cannot parse the policy file: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyFileError("the policy file must be a mapping")
    try:
        return PolicyFile.model_validate(data)
    except ValueError as error:
        raise PolicyFileError(f"invalid policy file: {error}") from None


def load_policy_file(path: Path) -> PolicyFile:
    """Read and validate a policy file (``.toml``, else YAML)."""
    return parse_policy(path.read_text(), path.suffix.lower())
