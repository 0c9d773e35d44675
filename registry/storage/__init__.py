"""Storage drivers: bytes at paths, behind one small interface."""

from registry.storage.driver import (
    FileInfo,
    FileWriter,
    PathBusy,
    PathNotFound,
    StorageDriver,
    StorageError,
)
from registry.storage.filesystem import FilesystemDriver

__all__ = [
    "FileInfo",
    "FileWriter",
    "FilesystemDriver",
    "PathBusy",
    "PathNotFound",
    "StorageDriver",
    "StorageError",
]
