"""HTTPS served by the registry itself (``REGISTRY_TLS__CERTFILE`` / ``__KEYFILE``), under each
HTTP server: python-dxf (which sends credentials only over TLS), skopeo and httpx checking the
certificate, and docker."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dxf import DXF, DXFBase

from tests.e2e.conftest import PASSWORD, ROOT, USER, Docker, Server, start_registry
from tests.e2e.test_skopeo import make_layout, skopeo

pytestmark = pytest.mark.e2e
MIB = 1024 * 1024


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (signed by its own key) and that key, as PEM files; the
    key in a folder of its own (skopeo takes a key beside a trusted certificate for a client's)."""
    (folder / "key").mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "ca.crt", folder / "key" / "registry.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(params=["hypercorn", "granian", "uvicorn"])
def tls_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Server, Path]]:
    """The registry serving HTTPS with a fresh self-signed certificate; (server, certificate)."""
    certificate, key = self_signed_certificate(tmp_path / "certs")
    server = start_registry(
        tmp_path / "data",
        tmp_path / "registry.log",
        REGISTRY_SERVER=request.param,
        REGISTRY_TLS__CERTFILE=str(certificate),
        REGISTRY_TLS__KEYFILE=str(key),
    )
    yield server, certificate
    server.stop()


def log_in(client: DXFBase, response: requests.Response) -> None:
    client.authenticate(USER, PASSWORD, response=response)


def dxf_client(server: Server, certificate: Path, repo: str) -> DXF:
    return DXF(server.host, repo, auth=log_in, tlsverify=str(certificate), timeout=60)


def test_python_dxf_round_trip(tls_server: tuple[Server, Path], tmp_path: Path) -> None:
    server, certificate = tls_server
    data = os.urandom(3 * MIB + 123)  # several reads of the file, and not a whole block
    layer = tmp_path / "layer.bin"
    layer.write_bytes(data)
    expected = f"sha256:{hashlib.sha256(data).hexdigest()}"
    with dxf_client(server, certificate, "tools/dxf") as client:
        assert client.push_blob(str(layer)) == expected
        assert client.blob_size(expected) == len(data)
        for _ in range(2):  # the first read goes to disk, the second is a cached file's
            chunks = cast(Iterable[bytes], client.pull_blob(expected))
            assert b"".join(chunks) == data  # dxf checks the digest too
        manifest = client.set_alias("v1", expected)  # a schema 2 manifest, as JSON
        assert client.list_aliases() == ["v1"]
        assert client.get_alias("v1") == [expected]
        assert client.get_manifest("v1") == manifest
        _, response = client.head_manifest_and_response("v1")
        manifest_digest = hashlib.sha256(manifest.encode()).hexdigest()
        assert response.headers["docker-content-digest"] == f"sha256:{manifest_digest}"

    with dxf_client(server, certificate, "tools/other") as other:
        assert other.mount_blob("tools/dxf", expected) == expected
        assert other.blob_size(expected) == len(data)
        other.set_alias("mounted", expected)  # the catalog lists repositories with manifests

    base = DXFBase(server.host, auth=log_in, tlsverify=str(certificate))
    assert base.list_repos() == ["tools/dxf", "tools/other"]

    with dxf_client(server, certificate, "tools/dxf") as client:
        assert client.del_alias("v1") == [expected]
        assert client.list_aliases() == []


def test_certificate_is_checked_and_plain_http_gets_nothing(
    tls_server: tuple[Server, Path],
) -> None:
    server, certificate = tls_server
    trusted = ssl.create_default_context(cafile=str(certificate))
    answer = httpx.get(f"{server.url}/v2/", verify=trusted, auth=(USER, PASSWORD))
    assert answer.status_code == 200
    assert answer.headers["docker-distribution-api-version"] == "registry/2.0"

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.url}/v2/")  # the system's trust store does not know it

    try:  # a plain HTTP request to the TLS port gets no API answer
        plain = httpx.get(f"http://{server.host}/v2/", auth=(USER, PASSWORD), timeout=5)
    except httpx.TransportError:
        pass
    else:
        assert plain.status_code >= 400
        assert "docker-distribution-api-version" not in plain.headers

    with pytest.raises(requests.exceptions.SSLError):
        DXFBase(server.host, auth=log_in, tlsverify=True).list_repos()


def test_skopeo_copies_over_tls(tls_server: tuple[Server, Path], tmp_path: Path) -> None:
    server, certificate = tls_server
    digest = make_layout(tmp_path / "src", "v1", layers=2)
    target = f"docker://{server.host}/tools/skopeo-tls/img:v1"
    creds = f"{USER}:{PASSWORD}"
    certs = str(certificate.parent)  # skopeo trusts the *.crt files of this folder
    skopeo(
        "copy",
        "--preserve-digests",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        creds,
        f"oci:{tmp_path / 'src'}:v1",
        target,
    )
    inspected = json.loads(skopeo("inspect", "--cert-dir", certs, "--creds", creds, target))
    assert inspected["Digest"] == digest
    skopeo(
        "copy",
        "--preserve-digests",
        "--src-cert-dir",
        certs,
        "--src-creds",
        creds,
        target,
        f"oci:{tmp_path / 'dst'}:v1",
    )
    for blob in (tmp_path / "src/blobs/sha256").iterdir():
        assert (tmp_path / "dst/blobs/sha256" / blob.name).read_bytes() == blob.read_bytes()


def test_docker_pushes_and_pulls_over_tls(
    docker: Docker, tls_server: tuple[Server, Path], tmp_path: Path
) -> None:
    """docker (Go's TLS client, offering h2 and http/1.1) over HTTPS: it takes loopback
    registries as insecure, so it skips checking the certificate, but still talks TLS first
    and would fail over to plain HTTP, which this port does not speak."""
    server, _ = tls_server
    image = f"{server.host}/tools/docker-tls:{uuid.uuid4().hex[:8]}"
    docker.build_image(image, tmp_path / "context", layers=2)
    try:
        docker.login(server.host, USER, PASSWORD)
        digest, _ = docker.push(image)
        docker.run("rmi", image)
        assert f"Digest: {digest}" in docker.run("pull", image).stdout
    finally:
        docker.run("rmi", "-f", image, check=False)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REGISTRY_TLS__CERTFILE": "{cert}"}, "set both __CERTFILE and __KEYFILE, or neither"),
        (
            {"REGISTRY_TLS__CERTFILE": "{cert}", "REGISTRY_TLS__KEYFILE": "{missing}"},
            "is not a file",
        ),
        (
            {"REGISTRY_TLS__CERTFILE": "{key}", "REGISTRY_TLS__KEYFILE": "{key}"},
            "invalid TLS settings",
        ),
    ],
)
def test_bad_tls_settings_stop_the_start(tmp_path: Path, env: dict[str, str], message: str) -> None:
    certificate, key = self_signed_certificate(tmp_path / "certs")
    files = {"cert": certificate, "key": key, "missing": tmp_path / "nothing.key"}
    settings = {name: value.format(**files) for name, value in env.items()}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    result = subprocess.run(
        [sys.executable, "-m", "registry"],
        env={
            **clean,
            **settings,
            "REGISTRY_HOST": "127.0.0.1",
            "REGISTRY_PORT": "1",  # never reached: the settings are refused first
            "REGISTRY_DATA_DIR": str(tmp_path / "data"),
            "REGISTRY_USERNAME": USER,
            "REGISTRY_PASSWORD": PASSWORD,
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr
