"""The deployment examples parse, hang together, and configure settings that exist."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def k8s_objects() -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["apiVersion"] and document["kind"], path
            objects[document["kind"]] = document
    return objects


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [n for n in os.environ if n.startswith("REGISTRY_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_kubernetes_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = k8s_objects()
    assert {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"} <= set(objects)
    deployment = objects["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    assert (
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    )
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] < 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/status/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/status/health"
    port = container["ports"][0]["containerPort"]
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] in ("http", port)
    sources = {s.get("configMapRef", s.get("secretRef", {}))["name"] for s in container["envFrom"]}
    assert sources == {
        objects["ConfigMap"]["metadata"]["name"],
        objects["Secret"]["metadata"]["name"],
    }
    env = {**objects["ConfigMap"]["data"], **objects["Secret"]["stringData"]}
    settings = settings_from(
        {k: v for k, v in env.items() if k.startswith("REGISTRY_")}, monkeypatch
    )
    assert settings.port == port
    assert settings.storage.backend == "s3" and settings.storage.s3.bucket
    assert settings.storage.s3.redirect is True
    assert settings.username and settings.password


def test_compose_s3_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    path = DEPLOY / "compose" / "docker-compose-s3.yaml"
    document = yaml.safe_load(path.read_text())
    replicas = [s for name, s in document["services"].items() if name.startswith("registry-")]
    assert len(replicas) == 2 and all("s3" in s["profiles"] for s in replicas)
    env = {
        k: str(v).replace("${REGISTRY_PASSWORD:?set REGISTRY_PASSWORD}", "x")
        for k, v in replicas[0]["environment"].items()
        if k.startswith("REGISTRY_")
    }
    settings = settings_from(env, monkeypatch)
    assert settings.storage.backend == "s3"
    assert settings.storage.s3.endpoint_url == "http://minio:9000"
    assert settings.storage.s3.path_style is True
    assert (path.parent / "nginx-s3.conf").is_file()
    compose = shutil.which("docker-compose")
    if compose is not None:  # the real parser, interpolation included
        checked = subprocess.run(
            [compose, "-f", str(path), "--profile", "s3", "config", "-q"],
            env={**os.environ, "REGISTRY_PASSWORD": "x"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stderr
