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
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    username: str | None = None
    password: SecretStr | None = None
    htpasswd_file: Path | None = None
    anonymous_pull: bool = False
    delete_enabled: bool = True
    realm: str = "Registry"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    storage: StorageSettings = StorageSettings()

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
    def has_configured_users(self) -> bool:
        return self.username is not None or self.htpasswd_file is not None
