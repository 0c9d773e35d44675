"""Manifests by tag and digest for OCI and Docker media types; validation; deletes."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from tests.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    descriptor,
    image_manifest,
    push_blob,
    push_image,
    sha256,
)

pytestmark = pytest.mark.anyio
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


async def test_put_and_get_by_tag_and_digest_returns_exact_bytes(client: httpx.AsyncClient) -> None:
    digest, raw = await push_image(client, "team/app/api", "1.0", [os.urandom(64)])
    for reference in ("1.0", digest):
        response = await client.get(f"/v2/team/app/api/manifests/{reference}")
        assert response.status_code == 200
        assert response.content == raw
        assert response.headers["content-type"] == OCI_MANIFEST
        assert response.headers["docker-content-digest"] == digest
        head = await client.head(f"/v2/team/app/api/manifests/{reference}")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(raw))
        assert head.headers["docker-content-digest"] == digest


async def test_put_answers_location_and_digest(client: httpx.AsyncClient) -> None:
    layer = os.urandom(10)
    config = b"{}"
    await push_blob(client, "p", layer)
    await push_blob(client, "p", config)
    raw = image_manifest(config, [layer])
    response = await client.put(
        "/v2/p/manifests/latest", content=raw, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == sha256(raw)
    assert response.headers["location"] == f"/v2/p/manifests/{sha256(raw)}"


async def test_docker_schema2_and_manifest_list(client: httpx.AsyncClient) -> None:
    layer, config = os.urandom(20), b'{"os":"linux"}'
    await push_blob(client, "d", layer)
    await push_blob(client, "d", config)
    raw = image_manifest(config, [layer], media_type=DOCKER_MANIFEST)
    put = await client.put(
        "/v2/d/manifests/v1", content=raw, headers={"Content-Type": DOCKER_MANIFEST}
    )
    assert put.status_code == 201
    listing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                descriptor(raw, DOCKER_MANIFEST, platform={"os": "linux", "architecture": "amd64"})
            ],
        }
    ).encode()
    put = await client.put(
        "/v2/d/manifests/multi", content=listing, headers={"Content-Type": DOCKER_LIST}
    )
    assert put.status_code == 201
    got = await client.get("/v2/d/manifests/multi")
    assert got.headers["content-type"] == DOCKER_LIST and got.content == listing
    got = await client.get("/v2/d/manifests/v1")
    assert got.headers["content-type"] == DOCKER_MANIFEST


async def test_oci_index_needs_its_manifests(client: httpx.AsyncClient) -> None:
    _, raw = await push_image(client, "i", "amd64", [b"layer"])
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(raw, OCI_MANIFEST)]}
    ).encode()
    ok = await client.put(
        "/v2/i/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX}
    )
    assert ok.status_code == 201
    dangling = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(b"nope", OCI_MANIFEST)],
        }
    ).encode()
    response = await client.put(
        "/v2/i/manifests/bad", content=dangling, headers={"Content-Type": OCI_INDEX}
    )
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")


async def test_missing_blob_is_manifest_blob_unknown(client: httpx.AsyncClient) -> None:
    await push_blob(client, "m", b"{}")
    raw = image_manifest(b"{}", [b"never uploaded"])
    response = await client.put(
        "/v2/m/manifests/x", content=raw, headers={"Content-Type": OCI_MANIFEST}
    )
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")
    assert_error(await client.get("/v2/m/manifests/x"), 404, "MANIFEST_UNKNOWN")


async def test_blob_in_another_repository_does_not_count(client: httpx.AsyncClient) -> None:
    await push_blob(client, "elsewhere", b"layer")
    await push_blob(client, "here", b"{}")
    raw = image_manifest(b"{}", [b"layer"])
    response = await client.put(
        "/v2/here/manifests/x", content=raw, headers={"Content-Type": OCI_MANIFEST}
    )
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[1]", b'{"schemaVersion": 2}', b'{"schemaVersion": 1, "config": {}}'],
)
async def test_invalid_manifest_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.put(
        "/v2/v/manifests/x", content=body, headers={"Content-Type": OCI_MANIFEST}
    )
    assert_error(response, 400, "MANIFEST_INVALID")


async def test_manifest_over_4mib_is_413(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v2/v/manifests/x",
        content=b" " * (4 * 1024 * 1024 + 1),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert_error(response, 413, "MANIFEST_INVALID")


async def test_put_by_digest_must_match(client: httpx.AsyncClient) -> None:
    digest, raw = await push_image(client, "g", "t", [b"l"])
    ok = await client.put(
        f"/v2/g/manifests/{digest}", content=raw, headers={"Content-Type": OCI_MANIFEST}
    )
    assert ok.status_code == 201
    wrong = sha256(b"other")
    bad = await client.put(
        f"/v2/g/manifests/{wrong}", content=raw, headers={"Content-Type": OCI_MANIFEST}
    )
    assert_error(bad, 400, "DIGEST_INVALID")


async def test_put_by_digest_with_tag_parameters(client: httpx.AsyncClient) -> None:
    digest, raw = await push_image(client, "tp", "first", [b"l"])
    response = await client.put(
        f"/v2/tp/manifests/{digest}?tag=a&tag=b",
        content=raw,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert response.status_code == 201
    assert response.headers.get_list("oci-tag") == ["a", "b"]
    tags = (await client.get("/v2/tp/tags/list")).json()["tags"]
    assert tags == ["a", "b", "first"]


async def test_retag_moves_the_tag(client: httpx.AsyncClient) -> None:
    first, _ = await push_image(client, "rt", "latest", [b"one"])
    second, _ = await push_image(client, "rt", "latest", [b"two"])
    response = await client.get("/v2/rt/manifests/latest")
    assert response.headers["docker-content-digest"] == second
    assert (await client.get(f"/v2/rt/manifests/{first}")).status_code == 200


async def test_delete_by_tag_keeps_the_manifest(client: httpx.AsyncClient) -> None:
    digest, _ = await push_image(client, "dt", "gone", [b"l"])
    assert (await client.delete("/v2/dt/manifests/gone")).status_code == 202
    assert_error(await client.get("/v2/dt/manifests/gone"), 404, "MANIFEST_UNKNOWN")
    assert (await client.get(f"/v2/dt/manifests/{digest}")).status_code == 200
    assert_error(await client.delete("/v2/dt/manifests/gone"), 404, "MANIFEST_UNKNOWN")


async def test_delete_by_digest_removes_tags_too(client: httpx.AsyncClient) -> None:
    digest, _ = await push_image(client, "dd", "v1", [b"l"])
    assert (await client.delete(f"/v2/dd/manifests/{digest}")).status_code == 202
    assert_error(await client.get(f"/v2/dd/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
    assert_error(await client.get("/v2/dd/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert (await client.get("/v2/dd/tags/list")).json()["tags"] == []
    assert_error(await client.delete(f"/v2/dd/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")


async def test_unknown_manifest_and_bad_references(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v2/u/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    assert_error(await client.get(f"/v2/u/manifests/{sha256(b'x')}"), 404, "MANIFEST_UNKNOWN")
    assert_error(await client.put("/v2/u/manifests/.bad", content=b"{}"), 400, "TAG_INVALID")
    assert_error(
        await client.put("/v2/u/manifests/sha256:abc", content=b"{}"), 400, "DIGEST_INVALID"
    )


@pytest.mark.parametrize("reference", [".INVALID_MANIFEST_NAME", "-bad", "sha256:abc", "md5:00"])
async def test_malformed_reference_on_get_and_head_is_unknown(
    client: httpx.AsyncClient, reference: str
) -> None:
    """No manifest has a malformed reference: GET/HEAD say 404 (OCI conformance suite)."""
    await push_image(client, "u", "real", [b"l"])
    assert_error(await client.get(f"/v2/u/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
    head = await client.head(f"/v2/u/manifests/{reference}")
    assert head.status_code == 404
    assert head.content == b""
