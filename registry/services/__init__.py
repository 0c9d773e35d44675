"""Registry logic over a storage driver; no HTTP here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from registry.services.blobs import BlobService
from registry.services.manifests import ManifestService
from registry.services.uploads import UploadService
from registry.storage.driver import StorageDriver


@dataclass(frozen=True, slots=True)
class RegistryServices:
    """The services a request handler calls, all over one driver."""

    driver: StorageDriver
    blobs: BlobService
    uploads: UploadService
    manifests: ManifestService

    @classmethod
    def over(
        cls, driver: StorageDriver, immutable_tag: Callable[[str, str], bool] | None = None
    ) -> RegistryServices:
        """``immutable_tag(name, tag)`` says which tags may never move or be deleted."""
        blobs = BlobService(driver)
        manifests = ManifestService(driver, blobs, immutable_tag)
        return cls(driver, blobs, UploadService(driver, blobs), manifests)


__all__ = ["BlobService", "ManifestService", "RegistryServices", "UploadService"]
