"""Where everything lives in storage: distribution's layout, drawn once.

A data folder (or bucket prefix) written by ``registry:2`` is served as it is, and back::

    docker/registry/v2/
      blobs/<alg>/<hex[:2]>/<hex>/data                 the bytes, once, whoever links them
      repositories/<name>/
        _layers/<alg>/<hex>/link                       blob linked into the repository
        _manifests/revisions/<alg>/<hex>/link          manifest present in the repository
        _manifests/tags/<tag>/current/link             what the tag points at now
        _manifests/tags/<tag>/index/<alg>/<hex>/link   every digest the tag has pointed at
        _manifests/referrers/<alg>/<hex>/<alg>/<hex>/link   subject -> referrer (ours)
        _uploads/<id>/data                             bytes received so far
        _uploads/<id>/startedat                        RFC 3339 start time
        _uploads/<id>/hashstates/<alg>/<offset>        running hash after <offset> bytes
      _gc/lock                                         held by the one running collection (ours)
      _gc/tombstones/blobs/<alg>/<hex>                 blob about to be swept (ours)
      _gc/tombstones/repositories/<name>/_layers/<alg>/<hex>      link about to be swept
      _gc/tombstones/repositories/<name>/_revisions/<alg>/<hex>   revision about to be swept
      _quarantine/<alg>/<hex>                          blob whose bytes do not match (scrub)

A link file holds the digest as text. Every function takes a name, tag or digest that was
already validated by ``registry.oci``; none ever sees raw request text.
"""

from __future__ import annotations

from registry.oci.digest import Digest

ROOT = "docker/registry/v2"
REPOSITORIES = f"{ROOT}/repositories"


def blob_data(digest: Digest) -> str:
    return f"{ROOT}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data"


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def layer_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_layers/{digest.algorithm}/{digest.hex}/link"


def manifest_revision_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/revisions/{digest.algorithm}/{digest.hex}/link"


def manifests(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests"


def tags(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags"


def tag(name: str, tag: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}"


def tag_current_link(name: str, tag: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}/current/link"


def tag_index_link(name: str, tag: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}/index/{digest.algorithm}/{digest.hex}/link"


def referrers(name: str, subject: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/referrers/{subject.algorithm}/{subject.hex}"


def referrer_link(name: str, subject: Digest, referrer: Digest) -> str:
    return f"{referrers(name, subject)}/{referrer.algorithm}/{referrer.hex}/link"


def upload(name: str, upload_id: str) -> str:
    return f"{REPOSITORIES}/{name}/_uploads/{upload_id}"


def upload_data(name: str, upload_id: str) -> str:
    return f"{upload(name, upload_id)}/data"


def upload_started_at(name: str, upload_id: str) -> str:
    return f"{upload(name, upload_id)}/startedat"


def upload_hashstates(name: str, upload_id: str, algorithm: str) -> str:
    return f"{upload(name, upload_id)}/hashstates/{algorithm}"


def upload_hashstate(name: str, upload_id: str, algorithm: str, offset: int) -> str:
    return f"{upload_hashstates(name, upload_id, algorithm)}/{offset}"


def blob_directory(digest: Digest) -> str:
    return f"{ROOT}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def blobs() -> str:
    return f"{ROOT}/blobs"


def layers(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_layers"


def revisions(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/revisions"


def uploads(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_uploads"


GC = f"{ROOT}/_gc"
TOMBSTONES = f"{GC}/tombstones"


def gc_lock() -> str:
    return f"{GC}/lock"


def blob_tombstone(digest: Digest) -> str:
    return f"{TOMBSTONES}/blobs/{digest.algorithm}/{digest.hex}"


def layer_tombstone(name: str, digest: Digest) -> str:
    return f"{TOMBSTONES}/repositories/{name}/_layers/{digest.algorithm}/{digest.hex}"


def revision_tombstone(name: str, digest: Digest) -> str:
    return f"{TOMBSTONES}/repositories/{name}/_revisions/{digest.algorithm}/{digest.hex}"


def quarantine(digest: Digest) -> str:
    return f"{ROOT}/_quarantine/{digest.algorithm}/{digest.hex}"
