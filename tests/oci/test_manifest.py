import json
from typing import Any

import pytest

from registry.oci.errors import ErrorCode, RegistryError
from registry.oci.manifest import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    parse_manifest,
    stored_media_type,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def manifest(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": D1,
            "size": 2,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D2, "size": 9}
        ],
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def test_image_manifest_keeps_raw_bytes_and_references() -> None:
    raw = json.dumps(manifest(), indent=7).encode()
    parsed = parse_manifest(raw, OCI_MANIFEST)
    assert parsed.raw == raw
    assert parsed.media_type == OCI_MANIFEST
    assert [str(d.digest) for d in parsed.blobs] == [D1, D2]
    assert parsed.subject is None


def test_index_references_manifests() -> None:
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": D1, "size": 10}],
        }
    ).encode()
    parsed = parse_manifest(raw, OCI_INDEX)
    assert [str(d.digest) for d in parsed.manifests] == [D1]
    assert parsed.blobs == ()


def test_media_type_from_header_when_body_has_none() -> None:
    parsed = parse_manifest(json.dumps(manifest(mediaType=None)).encode(), DOCKER_MANIFEST)
    assert parsed.media_type == DOCKER_MANIFEST


def test_subject_and_artifact_type_make_a_referrer() -> None:
    subject = {"mediaType": OCI_MANIFEST, "digest": D1, "size": 5}
    parsed = parse_manifest(
        json.dumps(manifest(subject=subject, artifactType="application/x-sig")).encode(), None
    )
    assert parsed.subject is not None and str(parsed.subject.digest) == D1
    referrer = parsed.as_referrer()
    assert referrer.artifact_type == "application/x-sig"
    assert referrer.size == len(parsed.raw)


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"not json", OCI_MANIFEST),
        (b"[]", OCI_MANIFEST),
        (json.dumps(manifest(schemaVersion=1)).encode(), OCI_MANIFEST),
        (json.dumps(manifest()).encode(), DOCKER_MANIFEST),  # body and header disagree
        (json.dumps(manifest(mediaType="application/x-bogus")).encode(), None),
        (json.dumps(manifest(config=None)).encode(), OCI_MANIFEST),
        (json.dumps(manifest(layers="x")).encode(), OCI_MANIFEST),
        (json.dumps(manifest(layers=[{"mediaType": "x", "size": 1}])).encode(), OCI_MANIFEST),
        (
            json.dumps(manifest(layers=[{"mediaType": "x", "size": -1, "digest": D1}])).encode(),
            None,
        ),
        (
            json.dumps(
                manifest(layers=[{"mediaType": "x", "size": 1, "digest": "sha256:x"}])
            ).encode(),
            None,
        ),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX}).encode(), OCI_INDEX),
    ],
)
def test_invalid_manifests(raw: bytes, content_type: str | None) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_manifest(raw, content_type)
    assert caught.value.code is ErrorCode.MANIFEST_INVALID


def test_oversized_manifest_is_413() -> None:
    with pytest.raises(RegistryError) as caught:
        parse_manifest(b" " * (4 * 1024 * 1024 + 1), OCI_MANIFEST)
    assert caught.value.status == 413


def test_stored_media_type() -> None:
    assert stored_media_type(json.dumps(manifest()).encode()) == OCI_MANIFEST
    assert stored_media_type(b'{"schemaVersion":2,"manifests":[]}') == OCI_INDEX
