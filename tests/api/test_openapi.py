"""schemathesis: requests generated from the OpenAPI document; no 5xx, no schema violations."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config import Settings
from registry.app import create_app
from tests.conftest import PASSWORD, USER

DATA = Path(tempfile.mkdtemp(prefix="registry-schemathesis-"))
APP = create_app(Settings(data_dir=DATA, username=USER, password=PASSWORD, _env_file=None))
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@hypothesis.settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(headers=AUTH, checks=CHECKS)


def test_schema_is_served() -> None:
    from starlette.testclient import TestClient

    with TestClient(APP) as client:
        document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.") and "/v2/{name}/blobs/uploads/" in document["paths"]
