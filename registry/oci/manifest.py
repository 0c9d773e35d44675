"""Manifest media types and validation.

A manifest is kept as the exact bytes the client sent (its digest is the hash of those bytes);
``parse_manifest`` only reads them to validate the document and to find what it references.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from registry.oci.digest import Digest
from registry.oci.errors import ErrorCode, RegistryError

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES: Final = IMAGE_MANIFEST_TYPES | INDEX_TYPES
MAX_MANIFEST_SIZE: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A reference from a manifest to a blob or another manifest."""

    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated image manifest or index, with the raw bytes it was parsed from."""

    raw: bytes
    digest: Digest
    media_type: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """The blobs (config and layers) this manifest needs in its repository."""
        return ((self.config,) if self.config else ()) + self.layers

    def as_referrer(self) -> Descriptor:
        """The descriptor that lists this manifest in its subject's referrers index."""
        artifact_type = self.artifact_type or (self.config.media_type if self.config else None)
        return Descriptor(
            self.media_type, self.digest, len(self.raw), artifact_type, self.annotations or None
        )


def _invalid(detail: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_INVALID, detail)


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _invalid(f"{where}: descriptor must be an object")
    media_type = value.get("mediaType")
    size = value.get("size")
    digest = value.get("digest")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}: mediaType must be a non-empty string")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where}: size must be a non-negative integer")
    if not isinstance(digest, str):
        raise _invalid(f"{where}: digest must be a string")
    try:
        parsed = Digest.parse(digest)
    except RegistryError as error:
        raise _invalid(f"{where}: {error.detail}") from None
    artifact_type = value.get("artifactType")
    annotations = value.get("annotations")
    return Descriptor(
        media_type,
        parsed,
        size,
        artifact_type if isinstance(artifact_type, str) else None,
        annotations if isinstance(annotations, dict) else None,
    )


def _descriptors(document: dict[str, Any], key: str) -> tuple[Descriptor, ...]:
    items = document.get(key, [])
    if not isinstance(items, list):
        raise _invalid(f"{key} must be an array")
    return tuple(_descriptor(item, f"{key}[{i}]") for i, item in enumerate(items))


def media_type_of(content_type: str | None) -> str:
    """The bare media type of a Content-Type header value."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_manifest(raw: bytes, content_type: str | None) -> Manifest:
    """Validate a pushed manifest, raising ``MANIFEST_INVALID`` with a reason."""
    if len(raw) > MAX_MANIFEST_SIZE:
        raise RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f"manifest is larger than {MAX_MANIFEST_SIZE} bytes",
            status=413,
        )
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise _invalid(f"manifest is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise _invalid("manifest must be a JSON object")
    if document.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    header_type = media_type_of(content_type)
    if declared and header_type in MANIFEST_TYPES and declared != header_type:
        raise _invalid(f"mediaType {declared!r} does not match Content-Type {header_type!r}")
    media_type = declared or (
        header_type if header_type in MANIFEST_TYPES else detect_media_type(document)
    )
    if media_type not in MANIFEST_TYPES:
        raise _invalid(f"unsupported manifest media type: {media_type!r}")
    subject = _descriptor(document["subject"], "subject") if "subject" in document else None
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    annotations = document.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise _invalid("annotations must be an object")
    common: dict[str, Any] = {
        "raw": raw,
        "digest": Digest.of(raw),
        "media_type": media_type,
        "subject": subject,
        "artifact_type": artifact_type,
        "annotations": annotations,
    }
    if media_type in INDEX_TYPES:
        if "manifests" not in document:
            raise _invalid("an index needs a manifests array")
        return Manifest(manifests=_descriptors(document, "manifests"), **common)
    if "config" not in document:
        raise _invalid("an image manifest needs a config descriptor")
    return Manifest(
        config=_descriptor(document["config"], "config"),
        layers=_descriptors(document, "layers"),
        **common,
    )


def detect_media_type(document: dict[str, Any]) -> str:
    """The media type of a manifest document that does not declare one."""
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST


def stored_media_type(raw: bytes) -> str:
    """The media type to serve a stored manifest with (its own ``mediaType``, else detected)."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return OCI_MANIFEST
    if not isinstance(document, dict):
        return OCI_MANIFEST
    declared = document.get("mediaType")
    return declared if isinstance(declared, str) and declared else detect_media_type(document)


def referrers_index(descriptors: list[Descriptor]) -> bytes:
    """The OCI image index the referrers API answers with."""
    return orjson.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [d.to_json() for d in descriptors],
        }
    )
