"""The OCI distribution and image specs as pure code: digests, names, manifests, errors."""

from registry.oci.digest import Digest, ResumableHasher
from registry.oci.errors import ErrorCode, RegistryError
from registry.oci.manifest import Descriptor, Manifest, parse_manifest
from registry.oci.reference import parse_name, parse_reference, parse_tag

__all__ = [
    "Descriptor",
    "Digest",
    "ErrorCode",
    "Manifest",
    "RegistryError",
    "ResumableHasher",
    "parse_manifest",
    "parse_name",
    "parse_reference",
    "parse_tag",
]
