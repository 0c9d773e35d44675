"""Settings, read from ``REGISTRY_*`` environment variables and an optional ``.env`` file.

Nested groups use ``__``: ``REGISTRY_STORAGE__BACKEND=filesystem``. Built once at start-up and
passed to ``registry.app.create_app``; tests build their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class S3Settings(BaseModel):
    """An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, GCS interoperability).

    Credentials come from the standard AWS chain (``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, instance or pod roles), never from here.
    """

    bucket: str = ""
    prefix: str = ""  # keys are <prefix>/docker/registry/v2/..., as distribution's S3 driver
    region: str = "us-east-1"
    endpoint_url: str | None = None  # None: AWS; else e.g. http://minio:9000
    path_style: bool = False  # http://host/bucket/key instead of http://bucket.host/key
    redirect: bool = False  # blob GET answers 307 to a pre-signed URL
    redirect_ttl: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] = 1200  # seconds
    part_size: Annotated[int, Field(ge=5 * MIB, le=5 * 1024 * MIB)] = 16 * MIB
    lock_ttl: Annotated[int, Field(ge=5, le=3600)] = 60  # seconds a writer's lease lasts
    max_connections: Annotated[int, Field(ge=1, le=1024)] = 64


class StorageSettings(BaseModel):
    """Where blobs and manifests are kept."""

    backend: Literal["filesystem", "s3"] = "filesystem"
    s3: S3Settings = S3Settings()

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> StorageSettings:
        if self.backend == "s3" and not self.s3.bucket:
            raise ValueError("REGISTRY_STORAGE__BACKEND=s3 needs REGISTRY_STORAGE__S3__BUCKET")
        return self


class AuthSettings(BaseModel):
    """Access control: Basic (the default) or Docker token auth, and an optional policy file."""

    mode: Literal["basic", "token"] = "basic"
    policy_file: Path | None = None  # YAML or TOML: users, groups, robots, rules, OIDC issuers
    issuer: str = "registry"  # the ``iss`` of the tokens this registry signs
    service: str = "registry"  # the ``service`` of the challenge, ``aud`` of the tokens
    realm: str | None = None  # token endpoint URL; default: this server's ``/auth/token``
    token_ttl: Annotated[int, Field(ge=30, le=86_400)] = 300
    refresh_ttl: Annotated[int, Field(ge=60, le=30 * 86_400)] = 86_400
    signing_key: Path | None = None  # PEM EC P-256 key; default: generated under the data dir
    oidc_allow_http: bool = False  # accept http:// OIDC issuers (tests and development only)
    max_failed_logins: Annotated[int, Field(ge=1, le=10_000)] = 10
    lockout_seconds: Annotated[int, Field(ge=1, le=86_400)] = 300
    audit_log: Path | None = None  # JSON lines appended here; default: stderr

    @model_validator(mode="after")
    def _files_exist(self) -> AuthSettings:
        if self.policy_file is not None and not self.policy_file.is_file():
            raise ValueError(f"REGISTRY_AUTH__POLICY_FILE {self.policy_file} is not a file")
        if self.signing_key is not None and not self.signing_key.is_file():
            raise ValueError(f"REGISTRY_AUTH__SIGNING_KEY {self.signing_key} is not a file")
        return self


class GCSettings(BaseModel):
    """Garbage collection and upload expiry (``REGISTRY_GC__*``)."""

    grace_seconds: Annotated[float, Field(ge=0)] = 3600
    """Nothing written, linked or pulled more recently than this is ever collected."""
    interval_seconds: Annotated[float, Field(ge=0)] = 0
    """Run an online collection this often inside the server; 0 turns it off."""
    delete_untagged: bool = False
    """Whether the periodic collection also removes manifests no tag reaches."""
    upload_max_age_seconds: Annotated[float, Field(ge=60)] = 24 * 3600
    """An upload session idle for longer than this is purged."""
    upload_purge_interval_seconds: Annotated[float, Field(gt=0)] = 600
    """How often the server looks for expired upload sessions."""


class LimitSettings(BaseModel):
    """Limits that keep hostile or broken clients from exhausting the server."""

    max_header_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024
    """Total size of a request's header lines; larger requests get 431."""
    body_idle_seconds: Annotated[float, Field(gt=0)] = 60
    """The longest a request body may go without sending a byte."""
    body_min_rate: Annotated[int, Field(ge=0)] = 1024
    """Bytes/second a body must average (after its first 30 s); 0 turns the check off."""
    max_uploads_per_client: Annotated[int, Field(ge=0)] = 64
    """Upload sessions one client address may have open at once; 0 for no cap."""


class TLSSettings(BaseModel):
    """HTTPS served by the registry itself (otherwise put a TLS proxy in front)."""

    certfile: Path | None = None
    """PEM certificate chain, the server's certificate first."""
    keyfile: Path | None = None
    """PEM private key of that certificate (not encrypted)."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> TLSSettings:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("set both __CERTFILE and __KEYFILE, or neither")
        for path in (self.certfile, self.keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a file")
        return self

    @property
    def enabled(self) -> bool:
        return self.certfile is not None


class Settings(BaseSettings):
    """Everything the registry can be told at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="REGISTRY_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = 5000
    data_dir: Path = Path("data")
    workers: Annotated[int, Field(ge=0, le=64)] = 0
    """Server worker processes; 0 starts one per CPU this process may use."""
    server: Literal["hypercorn", "granian", "uvicorn"] = "hypercorn"
    """The HTTP server: hypercorn (default), granian (sends whole blobs by path) or uvicorn
    (uploads with the fewest copies); see docs/performance.md."""
    username: str | None = None
    password: SecretStr | None = None
    htpasswd_file: Path | None = None
    anonymous_pull: bool = False
    delete_enabled: bool = True
    realm: str = "Registry"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    storage: StorageSettings = StorageSettings()
    auth: AuthSettings = AuthSettings()
    gc: GCSettings = GCSettings()
    limits: LimitSettings = LimitSettings()
    tls: TLSSettings = TLSSettings()

    @model_validator(mode="after")
    def _user_needs_both(self) -> Settings:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both REGISTRY_USERNAME and REGISTRY_PASSWORD, or neither")
        if self.htpasswd_file is not None and not self.htpasswd_file.is_file():
            raise ValueError(f"REGISTRY_HTPASSWD_FILE {self.htpasswd_file} is not a file")
        return self

    @property
    def generated_htpasswd(self) -> Path:
        """Where the first start keeps the generated ``admin`` user's bcrypt hash."""
        return self.data_dir / "auth" / "htpasswd"

    @property
    def default_signing_key(self) -> Path:
        """Where the first start in token mode keeps the generated ES256 signing key."""
        return self.data_dir / "auth" / "token-signing-key.pem"

    @property
    def has_configured_users(self) -> bool:
        return (
            self.username is not None
            or self.htpasswd_file is not None
            or self.auth.policy_file is not None
        )
