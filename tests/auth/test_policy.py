"""The policy file format and its evaluation: patterns, groups, robots, anonymous pull,
immutable tags and OIDC claim conditions; the examples under docs/examples stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.auth.base import ANONYMOUS, Access, Identity
from registry.auth.policy import Policy, condition_met
from registry.auth.policyfile import (
    PolicyFileError,
    load_policy_file,
    parse_policy,
    repository_regex,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
HASH = "$2b$04$" + "a" * 53


def policy(text: str, suffix: str = ".yaml") -> Policy:
    return Policy(parse_policy(text, suffix))


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("library/*", "library/alpine", True),
        ("library/*", "library/alpine/extra", False),
        ("library/*", "library", False),
        ("team-a/**", "team-a/app", True),
        ("team-a/**", "team-a/app/api/v2", True),
        ("team-a/**", "team-ab/app", False),
        ("team-a/**", "team-a", False),
        ("**", "anything/at/all", True),
        ("a.b", "axb", False),  # dots are literal
        ("*/cache", "x/cache", True),
    ],
)
def test_repository_patterns(pattern: str, name: str, matches: bool) -> None:
    assert bool(repository_regex(pattern).match(name)) is matches


def test_team_example() -> None:
    team = Policy(load_policy_file(EXAMPLES / "policy-team.yaml"))
    alice, bob, carol = Identity("alice"), Identity("bob"), Identity("carol")
    robot = team.kind_of("ci-builder")
    assert robot.kind == "robot" and team.kind_of("alice").kind == "user"
    assert team.actions(alice, "team-a/app/api") == {"pull", "push", "delete"}
    assert team.actions(robot, "team-a/app") == {"pull", "push"}
    assert team.actions(bob, "team-a/app") == set()
    assert team.actions(carol, "team-b/svc") == {"pull"}
    assert team.actions(ANONYMOUS, "library/alpine") == {"pull"}
    assert team.actions(ANONYMOUS, "team-a/app") == set()
    assert team.actions(robot, "library/alpine") == {"pull", "push"}
    assert team.actions(robot, "library/alpine/x") == set()
    # an anonymous caller never gets registry-wide access (ping, catalog)
    assert not team.allows(ANONYMOUS, Access(None, "pull"))
    assert team.allows(carol, Access(None, "pull"))
    assert team.immutable("team-a/app", "v1.2.0") and team.immutable("library/x", "release-3")
    assert not team.immutable("team-a/app", "latest") and not team.immutable("other/x", "v1")


def test_github_example() -> None:
    github = Policy(load_policy_file(EXAMPLES / "policy-github-oidc.yaml"))
    issuer = "https://token.actions.githubusercontent.com"
    release = Identity(
        "repo:my-org/app:environment:production",
        "oidc",
        issuer,
        (
            ("environment", "production"),
            ("ref", "refs/tags/v1.0.0"),
            ("repository", "my-org/app"),
            ("repository_owner_id", "4242"),
            ("workflow_ref", "my-org/app/.github/workflows/release.yml@refs/tags/v1.0.0"),
        ),
    )
    assert github.actions(release, "my-org/app") == {"pull", "push"}
    assert github.actions(release, "my-org/other") == {"pull"}  # authenticated: true
    branch = Identity(
        "x",
        "oidc",
        issuer,
        (("ref", "refs/heads/main"), ("repository", "my-org/app"), ("repository_owner_id", "4242")),
    )
    assert github.actions(branch, "my-org/app") == {"pull"}
    assert github.actions(branch, "my-org/app/ci/test") == {"pull", "push"}
    assert github.actions(branch, "ci/my-org/app/pr-1") == {"pull", "push"}
    assert github.actions(branch, "ci/my-org/other/pr-1") == set()
    stranger = Identity("y", "oidc", issuer, (("repository", "my-org/app"),))
    assert github.actions(stranger, "my-org/app/ci/test") == {"pull"}  # signed in: pull only
    other_issuer = Identity("z", "oidc", "https://evil.example", release.claims)
    assert "push" not in github.actions(other_issuer, "my-org/app")


def test_toml_policy() -> None:
    toml = f"""
[users]
dave = "{HASH}"

[[rules]]
repositories = ["dave/**"]
users = ["dave"]
actions = ["pull", "push"]
"""
    assert policy(toml, ".toml").actions(Identity("dave"), "dave/x") == {"pull", "push"}


def test_robots_and_users_are_distinct() -> None:
    p = policy(
        f"users: {{u: '{HASH}'}}\nrobots: {{r: '{HASH}'}}\n"
        "rules: [{repositories: ['a/*'], robots: [r], actions: [push]},"
        " {repositories: ['a/*'], users: [u], actions: [pull]}]\n"
    )
    assert p.actions(Identity("r", "robot"), "a/b") == {"push"}
    assert p.actions(Identity("r", "user"), "a/b") == set()  # a user named like the robot
    assert p.actions(Identity("u"), "a/b") == {"pull"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("users: {alice: plaintext}", "bcrypt"),
        ("rules: [{repositories: ['a/*'], actions: [pull], users: [nobody]}]", "unknown users"),
        ("groups: {g: [ghost]}", "unknown members"),
        ("rules: [{repositories: ['A/*'], actions: [pull]}]", "invalid repository pattern"),
        ("rules: [{repositories: [], actions: [pull]}]", "at least one"),
        ("rules: [{repositories: ['a'], actions: [fly]}]", "actions"),
        ("rulez: []", "rulez"),
        ("[1, 2]", "mapping"),
        ("a: [", "cannot parse"),
        (f"users: {{oidc: '{HASH}'}}", "invalid account name"),
        (f"users: {{x: '{HASH}'}}\nrobots: {{x: '{HASH}'}}", "both a user and a robot"),
        ("oidc: [{issuer: 'ftp://x', audience: a, rules: []}]", "issuer"),
        (
            "oidc: [{issuer: 'https://i', audience: a, rules: "
            "[{conditions: {}, repositories: ['a'], actions: [pull]}]}]",
            "conditions",
        ),
        (
            "oidc: [{issuer: 'https://i', audience: a, algorithms: [HS256], rules: "
            "[{conditions: {sub: x}, repositories: ['a'], actions: [pull]}]}]",
            "algorithms",
        ),
    ],
)
def test_invalid_policy_files(text: str, message: str) -> None:
    with pytest.raises(PolicyFileError, match=message):
        parse_policy(text, ".yaml")


@pytest.mark.parametrize(
    ("condition", "value", "met"),
    [
        ("my-org/app", "my-org/app", True),
        ("my-org/app", "my-org/app2", False),
        ("refs/tags/v*", "refs/tags/v1.2", True),
        ("refs/tags/v*", "refs/heads/v1", False),
        (["refs/heads/main", "refs/tags/*"], "refs/tags/x", True),
        (["refs/heads/main", "refs/tags/*"], "refs/heads/dev", False),
        (4242, "4242", True),
        (True, "true", True),
        ("a.b", "axb", False),
        ("x", None, False),
    ],
)
def test_claim_conditions(
    condition: str | int | bool | list[str | int], value: str | None, met: bool
) -> None:
    assert condition_met(condition, value) is met


def test_oidc_repositories_can_name_claims() -> None:
    p = policy(
        "oidc: [{issuer: 'https://ci', audience: r, rules: [{conditions: {owner_id: '7'},"
        " repositories: ['ci/{repository}/**', 'cache/{repository}'], actions: [pull, push]}]}]"
    )

    def ci(repository: str, owner: str = "7") -> Identity:
        return Identity(
            "s", "oidc", "https://ci", (("owner_id", owner), ("repository", repository))
        )

    assert p.actions(ci("My-Org/App"), "ci/my-org/app/api") == {"pull", "push"}
    assert p.actions(ci("my-org/app"), "cache/my-org/app") == {"pull", "push"}
    assert p.actions(ci("my-org/app"), "ci/my-org/other/api") == set()
    assert p.actions(ci("my-org/app", owner="8"), "ci/my-org/app/api") == set()
    for hostile in ("*", "my-org/**", "a/../b", "", "x y"):
        assert p.actions(ci(hostile), "ci/a/b") == set(), hostile
    assert p.actions(Identity("s", "oidc", "https://ci", (("owner_id", "7"),)), "ci/x/y") == set()
    with pytest.raises(PolicyFileError, match="pattern"):
        parse_policy(
            "oidc: [{issuer: 'https://ci', audience: r, rules: [{conditions: {a: b},"
            " repositories: ['ci/{bad-claim}'], actions: [pull]}]}]",
            ".yaml",
        )
