"""Evaluating the access policy: what an identity may do on a repository, which tags are fixed.

Grants only add up: an identity may do an action on a repository if any rule that names it
(directly, through a group, as ``authenticated`` or ``anonymous``) and matches the repository
lists the action. OIDC identities are granted by their issuer's rules, whose conditions are
checked against the token's claims.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from registry.auth.base import Access, Action, Identity
from registry.auth.policyfile import (
    CLAIM_REFERENCE,
    ClaimCondition,
    ImmutableTags,
    OidcIssuer,
    PolicyFile,
    Rule,
    glob_regex,
    repository_regex,
)

ALL_ACTIONS: tuple[Action, ...] = ("pull", "push", "delete")
_CLAIM_VALUE = re.compile(r"^[a-z0-9]+(?:(?:[._-]+|/)[a-z0-9]+)*$")


def claim_text(value: object) -> str | None:
    """A scalar claim as the string conditions compare against (JSON spelling of booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    return None


def condition_met(condition: ClaimCondition, value: str | None) -> bool:
    """Exact match, glob (``*``, ``?``), or any of a list of those."""
    if value is None:
        return False
    options = condition if isinstance(condition, list) else [condition]
    return any(glob_regex(claim_text(option) or "").match(value) for option in options)


def conditions_met(conditions: Mapping[str, ClaimCondition], claims: Mapping[str, str]) -> bool:
    return all(condition_met(want, claims.get(name)) for name, want in conditions.items())


def matches_any(patterns: Iterable[str], repository: str) -> bool:
    return any(repository_regex(pattern).match(repository) for pattern in patterns)


def expand_claims(pattern: str, claims: Mapping[str, str]) -> str | None:
    """``pattern`` with each ``{claim}`` replaced by its lower-cased value; None if a claim is
    missing or its value is not a plain repository path (so it can never add a wildcard)."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        text = claims.get(match.group(1), "").lower()
        if not _CLAIM_VALUE.match(text):
            missing = True
        return text

    expanded = CLAIM_REFERENCE.sub(value, pattern)
    return None if missing else expanded


class Policy:
    """The rules of one policy file, ready to answer questions."""

    def __init__(self, file: PolicyFile) -> None:
        self.file = file
        self.issuers: dict[str, OidcIssuer] = {issuer.issuer: issuer for issuer in file.oidc}
        self._groups: dict[str, set[str]] = {}
        for group, members in file.groups.items():
            for member in members:
                self._groups.setdefault(member, set()).add(group)

    @classmethod
    def everyone_signed_in(cls, anonymous_pull: bool = False) -> Policy:
        """The Basic mode's policy: every known user may do anything; anonymous pull if on."""
        rules = [Rule(repositories=["**"], actions=list(ALL_ACTIONS), authenticated=True)]
        if anonymous_pull:
            rules.append(Rule(repositories=["**"], actions=["pull"], anonymous=True))
        return cls(PolicyFile(rules=rules))

    def kind_of(self, account: str) -> Identity:
        """The identity of a signed-in account (robots are listed under ``robots``)."""
        return Identity(account, "robot" if account in self.file.robots else "user")

    def _names(self, rule: Rule, identity: Identity) -> bool:
        if rule.anonymous:
            return True
        if identity.kind == "anonymous":
            return False
        if rule.authenticated:
            return True
        if identity.kind == "user":
            return identity.subject in rule.users or bool(
                self._groups.get(identity.subject, set()) & set(rule.groups)
            )
        if identity.kind == "robot":
            return identity.subject in rule.robots or bool(
                self._groups.get(identity.subject, set()) & set(rule.groups)
            )
        return False

    def actions(self, identity: Identity, repository: str) -> set[Action]:
        """Everything ``identity`` may do on ``repository``."""
        granted: set[Action] = set()
        for rule in self.file.rules:
            if self._names(rule, identity) and matches_any(rule.repositories, repository):
                granted.update(rule.actions)
        if identity.kind == "oidc":
            issuer = self.issuers.get(identity.issuer)
            claims = dict(identity.claims)
            for oidc_rule in issuer.rules if issuer else []:
                if not conditions_met(oidc_rule.conditions, claims):
                    continue
                patterns = [expand_claims(p, claims) for p in oidc_rule.repositories]
                if matches_any([p for p in patterns if p is not None], repository):
                    granted.update(oidc_rule.actions)
        return granted

    def allows(self, identity: Identity, access: Access) -> bool:
        """Registry-wide access (ping, catalog) needs only to be signed in."""
        if access.repository is None:
            return identity.kind != "anonymous"
        return access.action in self.actions(identity, access.repository)

    def immutable(self, repository: str, tag: str) -> bool:
        """Whether ``tag`` in ``repository`` may never move or be deleted once set."""
        return any(_fixes(entry, repository, tag) for entry in self.file.immutable_tags)


def _fixes(entry: ImmutableTags, repository: str, tag: str) -> bool:
    return matches_any(entry.repositories, repository) and any(
        glob_regex(pattern).match(tag) for pattern in entry.tags
    )
