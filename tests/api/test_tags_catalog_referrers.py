"""Tags list and catalog with pagination; the referrers API."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    descriptor,
    push_blob,
    push_image,
    sha256,
)

pytestmark = pytest.mark.anyio


async def test_tags_list_sorted_and_paginated(client: httpx.AsyncClient) -> None:
    for tag in ["b", "a", "c", "1.0", "latest"]:
        await push_image(client, "team/pg", tag, [b"layer"])
    response = await client.get("/v2/team/pg/tags/list")
    assert response.json() == {"name": "team/pg", "tags": ["1.0", "a", "b", "c", "latest"]}
    assert "link" not in response.headers
    page = await client.get("/v2/team/pg/tags/list", params={"n": 2})
    assert page.json()["tags"] == ["1.0", "a"]
    assert page.headers["link"] == '</v2/team/pg/tags/list?n=2&last=a>; rel="next"'
    page = await client.get("/v2/team/pg/tags/list", params={"n": 2, "last": "a"})
    assert page.json()["tags"] == ["b", "c"]
    page = await client.get("/v2/team/pg/tags/list", params={"n": 2, "last": "c"})
    assert page.json()["tags"] == ["latest"] and "link" not in page.headers
    page = await client.get("/v2/team/pg/tags/list", params={"n": 0})
    assert page.json()["tags"] == []


async def test_tags_of_unknown_repository(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v2/nobody/tags/list"), 404, "NAME_UNKNOWN")
    assert_error(await client.get("/v2/x/tags/list?n=-1"), 400, "PAGINATION_NUMBER_INVALID")


async def test_catalog_paginated(client: httpx.AsyncClient) -> None:
    for name in ["zeta", "alpha/one", "alpha/two/three", "beta"]:
        await push_image(client, name, "t", [b"l"])
    await push_blob(client, "blob/only", b"no manifests here")
    response = await client.get("/v2/_catalog")
    assert response.json() == {"repositories": ["alpha/one", "alpha/two/three", "beta", "zeta"]}
    page = await client.get("/v2/_catalog", params={"n": 3})
    assert page.json()["repositories"] == ["alpha/one", "alpha/two/three", "beta"]
    assert page.headers["link"] == '</v2/_catalog?n=3&last=beta>; rel="next"'
    page = await client.get("/v2/_catalog", params={"n": 3, "last": "beta"})
    assert page.json()["repositories"] == ["zeta"]


async def test_referrers(client: httpx.AsyncClient) -> None:
    subject_digest, subject_raw = await push_image(client, "ref", "app", [b"app layer"])
    subject = descriptor(subject_raw, OCI_MANIFEST)
    await push_blob(client, "ref", b"{}")
    signature_layer, sbom_layer = b"signature", b"sbom"
    await push_blob(client, "ref", signature_layer)
    await push_blob(client, "ref", sbom_layer)

    async def push_referrer(artifact_type: str, layer: bytes) -> str:
        raw = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": {
                    "mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": sha256(b"{}"),
                    "size": 2,
                },
                "layers": [descriptor(layer)],
                "subject": subject,
                "annotations": {"org.example": artifact_type},
            }
        ).encode()
        response = await client.put(
            f"/v2/ref/manifests/{sha256(raw)}", content=raw, headers={"Content-Type": OCI_MANIFEST}
        )
        assert response.status_code == 201
        assert response.headers["oci-subject"] == subject_digest
        return sha256(raw)

    signature = await push_referrer("application/vnd.example.sig", signature_layer)
    sbom = await push_referrer("application/vnd.example.sbom", sbom_layer)
    response = await client.get(f"/v2/ref/referrers/{subject_digest}")
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_INDEX
    index = response.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    found = {m["digest"]: m for m in index["manifests"]}
    assert set(found) == {signature, sbom}
    assert found[sbom]["artifactType"] == "application/vnd.example.sbom"
    assert found[sbom]["annotations"] == {"org.example": "application/vnd.example.sbom"}
    assert "oci-filters-applied" not in response.headers

    filtered = await client.get(
        f"/v2/ref/referrers/{subject_digest}",
        params={"artifactType": "application/vnd.example.sig"},
    )
    assert [m["digest"] for m in filtered.json()["manifests"]] == [signature]
    assert filtered.headers["oci-filters-applied"] == "artifactType"

    await client.delete(f"/v2/ref/manifests/{signature}")
    after = (await client.get(f"/v2/ref/referrers/{subject_digest}")).json()
    assert [m["digest"] for m in after["manifests"]] == [sbom]


async def test_referrers_of_unknown_subject_is_empty_index(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v2/none/referrers/{sha256(b'nothing')}")
    assert response.status_code == 200
    assert response.json()["manifests"] == []
    assert_error(await client.get("/v2/none/referrers/sha256:bad"), 400, "DIGEST_INVALID")


async def test_manifest_with_absent_subject_is_accepted(client: httpx.AsyncClient) -> None:
    absent = {"mediaType": OCI_MANIFEST, "digest": sha256(b"not pushed yet"), "size": 14}
    digest, _ = await push_image(client, "early", "sig", [b"x"], subject=absent)
    index = (await client.get(f"/v2/early/referrers/{absent['digest']}")).json()
    assert [m["digest"] for m in index["manifests"]] == [digest]
