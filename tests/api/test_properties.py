"""Property-based hostile input (hypothesis): whatever the request, never a 5xx, never a file
outside the storage root, and every error in the OCI format."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from config import Settings
from registry.app import create_app
from tests.conftest import PASSWORD, USER

ROOT = Path(tempfile.mkdtemp(prefix="registry-properties-"))
DATA = ROOT / "data"
CLIENT = TestClient(
    create_app(Settings(data_dir=DATA, username=USER, password=PASSWORD, _env_file=None)),
    raise_server_exceptions=False,
)
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
BLOB = os.urandom(1000)
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
FEWER = settings(EXAMPLES, max_examples=25)  # each example writes and fsyncs a session

# Pieces an attacker would combine: traversal, encodings, separators, odd bytes, long runs.
nasty = st.sampled_from(
    [
        "..",
        ".",
        "%2e%2e",
        "%2f",
        "/",
        "\\",
        "%00",
        "_uploads",
        "_layers",
        "sha256:",
        "a",
        "A",
        "-",
        "__",
        "%",
        "~",
        " ",
        "é",
        "\n",
        "0" * 64,
        "x" * 300,
    ]
)
segment = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20),
    st.lists(nasty, min_size=1, max_size=4).map("".join),
)


def path_text(parts: list[str]) -> str:
    return "/".join(quote(p, safe="%:.~-_") for p in parts)


def request(method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return CLIENT.request(method, path, headers=headers, **kwargs)


def check(response: httpx.Response, method: str = "GET") -> None:
    """The invariants every response keeps."""
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400 and method != "HEAD":
        errors = response.json()["errors"]
        assert errors and all({"code", "message", "detail"} <= set(e) for e in errors)
    assert sorted(p.name for p in ROOT.iterdir()) in ([], ["data"])
    data = DATA.resolve()
    for found in DATA.rglob("*") if DATA.exists() else []:
        assert found.resolve().is_relative_to(data), found


def setup_module() -> None:
    started = request(
        "POST", "/v2/props/blobs/uploads/", params={"digest": BLOB_DIGEST}, content=BLOB
    )
    assert started.status_code == 201, started.text


@EXAMPLES
@given(
    st.lists(segment, min_size=1, max_size=4),
    st.sampled_from(["tags/list", "manifests/latest", f"blobs/{BLOB_DIGEST}", "blobs/uploads/"]),
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
)
def test_any_repository_name(parts: list[str], tail: str, method: str) -> None:
    check(request(method, f"/v2/{path_text(parts)}/{tail}", content=b"x"), method)


@EXAMPLES
@given(segment, st.sampled_from(["GET", "HEAD", "PUT", "DELETE"]))
def test_any_reference(reference: str, method: str) -> None:
    check(request(method, f"/v2/props/manifests/{path_text([reference])}", content=b"{}"), method)


@EXAMPLES
@given(
    st.one_of(
        segment,
        st.from_regex(r"[a-z0-9+._-]{1,10}:[A-Za-z0-9=_-]{0,130}", fullmatch=True),
    ),
    st.sampled_from(["GET", "HEAD", "DELETE"]),
    st.sampled_from(["blobs", "referrers"]),
)
def test_any_digest(digest: str, method: str, kind: str) -> None:
    method = "GET" if kind == "referrers" else method
    check(request(method, f"/v2/props/{kind}/{path_text([digest])}"), method)


@EXAMPLES
@given(
    st.one_of(
        st.text(max_size=40),
        st.builds(
            "bytes={}-{}".format,
            st.one_of(st.just(""), st.integers(-5, 5000).map(str)),
            st.one_of(st.just(""), st.integers(-5, 5000).map(str)),
        ),
    )
)
def test_any_range_header(header: str) -> None:
    try:
        response = request("GET", f"/v2/props/blobs/{BLOB_DIGEST}", headers={"Range": header})
    except (UnicodeEncodeError, httpx.LocalProtocolError):
        return  # not a header a client can send
    check(response)
    assert response.status_code in (200, 206, 416)
    if response.status_code == 206:
        first, last = map(int, response.headers["content-range"][6:].split("/")[0].split("-"))
        assert response.content == BLOB[first : last + 1]
    elif response.status_code == 200:
        assert response.content == BLOB


@FEWER
@given(
    st.one_of(
        st.text(max_size=40),
        st.builds("{}-{}".format, st.integers(-3, 10**20), st.integers(-3, 10**20)),
    ),
    st.binary(max_size=64),
)
def test_any_content_range(header: str, body: bytes) -> None:
    location = request("POST", "/v2/props/blobs/uploads/").headers["location"]
    try:
        response = request("PATCH", location, content=body, headers={"Content-Range": header})
    except (UnicodeEncodeError, httpx.LocalProtocolError):
        return
    check(response, "PATCH")
    status = request("GET", location)
    assert status.status_code == 204
    if response.status_code == 202:  # accepted: the session holds exactly that body
        assert status.headers["range"] == f"0-{max(len(body) - 1, 0)}"
    else:
        assert status.headers["range"] == "0-0"


@FEWER
@given(segment, st.sampled_from(["GET", "PATCH", "PUT", "DELETE"]))
def test_any_upload_id(upload_id: str, method: str) -> None:
    path = f"/v2/props/blobs/uploads/{path_text([upload_id])}"
    check(request(method, path, params={"digest": BLOB_DIGEST}, content=b"abc"), method)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
manifest_like = st.fixed_dictionaries(
    {"schemaVersion": st.sampled_from([2, 1, "2", None])},
    optional={
        "mediaType": st.sampled_from(
            [
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.index.v1+json",
                "x",
            ]
        ),
        "config": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {
                    "mediaType": st.text(max_size=10),
                    "digest": st.just(BLOB_DIGEST),
                    "size": st.integers(),
                }
            ),
        ),
        "layers": st.lists(json_values, max_size=3),
        "manifests": st.lists(json_values, max_size=3),
        "subject": json_values,
    },
)


@EXAMPLES
@given(
    st.one_of(st.binary(max_size=200), json_values.map(json.dumps), manifest_like.map(json.dumps)),
    st.sampled_from(
        [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/json",
            "text/plain",
        ]
    ),
)
def test_any_manifest_body(body: bytes | str, content_type: str) -> None:
    raw = body.encode() if isinstance(body, str) else body
    response = request(
        "PUT", "/v2/props/manifests/fuzz", content=raw, headers={"Content-Type": content_type}
    )
    check(response, "PUT")
    if response.status_code == 201:  # accepted: served back byte for byte
        assert request("GET", "/v2/props/manifests/fuzz").content == raw
