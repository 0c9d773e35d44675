"""Build the access controller that the settings describe.

Without a policy file, Basic mode is what it always was: the env user, htpasswd users or the
generated ``admin`` may do everything (anonymous pull if enabled). With a policy file its
users, robots, rules, immutable tags and OIDC issuers apply (env and htpasswd users can still
sign in, and get what ``authenticated: true`` rules give). Token mode adds the token
endpoint and signs with a key from ``REGISTRY_AUTH__SIGNING_KEY`` or generated in the data
folder.
"""

from __future__ import annotations

from config import Settings
from registry.auth.basic import PasswordChecker, parse_htpasswd
from registry.auth.controller import PolicyAccessController
from registry.auth.credentials import Authenticator
from registry.auth.keys import load_or_create_signing_key
from registry.auth.oidc import OidcVerifier
from registry.auth.policy import Policy
from registry.auth.policyfile import load_policy_file
from registry.auth.throttle import LoginThrottle
from registry.auth.token import TokenAuthority


def password_checker(settings: Settings, policy: Policy) -> PasswordChecker:
    """bcrypt users (htpasswd, generated admin, the policy's users and robots), env user."""
    users: dict[str, bytes] = {}
    if settings.htpasswd_file is not None:
        users.update(parse_htpasswd(settings.htpasswd_file.read_text()))
    if not settings.has_configured_users and settings.generated_htpasswd.is_file():
        users.update(parse_htpasswd(settings.generated_htpasswd.read_text()))
    for accounts in (policy.file.users, policy.file.robots):
        users.update({name: hashed.encode() for name, hashed in accounts.items()})
    plain_users = {}
    if settings.username is not None and settings.password is not None:
        plain_users[settings.username] = settings.password.get_secret_value()
    return PasswordChecker(users, plain_users)


def create_policy(settings: Settings) -> Policy:
    if settings.auth.policy_file is None:
        return Policy.everyone_signed_in(settings.anonymous_pull)
    return Policy(load_policy_file(settings.auth.policy_file))


def create_access_controller(settings: Settings) -> PolicyAccessController:
    auth = settings.auth
    policy = create_policy(settings)
    oidc = OidcVerifier(policy.file.oidc, auth.oidc_allow_http) if policy.file.oidc else None
    throttle = LoginThrottle(auth.max_failed_logins, auth.lockout_seconds)
    authenticator = Authenticator(policy, password_checker(settings, policy), oidc, throttle)
    tokens = None
    if auth.mode == "token":
        key = load_or_create_signing_key(auth.signing_key or settings.default_signing_key)
        tokens = TokenAuthority(key, auth.issuer, auth.service, auth.token_ttl, auth.refresh_ttl)
    return PolicyAccessController(
        policy, authenticator, auth.mode, tokens, settings.realm, auth.realm
    )
