"""The referrers API: manifests whose ``subject`` is a given digest."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from registry.api.deps import Authorized, DigestParam, RepoName, Services
from registry.oci.manifest import OCI_INDEX, referrers_index

router = APIRouter(dependencies=[Authorized])


@router.get("/v2/{name:path}/referrers/{digest}")
async def list_referrers(
    request: Request, name: RepoName, digest: DigestParam, services: Services
) -> Response:
    """An OCI image index of the referrers, filtered by ``artifactType`` when given."""
    artifact_type = request.query_params.get("artifactType")
    descriptors = await services.manifests.referrers(name, digest, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    return Response(referrers_index(descriptors), media_type=OCI_INDEX, headers=headers)
