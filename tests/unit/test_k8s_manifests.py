"""The Kubernetes manifests are valid resources and say what each service needs to run.

Checked against the Kubernetes API schemas (strict: an unknown field fails),
since no cluster answers here; the NATS cluster config is checked by nats-server.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml

from shared.natsserver import nats_server_binary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.30"
WORKERS = ("runtime", "memory", "embedding", "evaluator")


def resources(folder: Path) -> list[dict[str, Any]]:
    """Every document of the files a kustomization lists."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return [
        document
        for name in kustomization["resources"]
        for document in yaml.safe_load_all((folder / name).read_text())
        if document
    ]


def deployment(name: str) -> dict[str, Any]:
    [found] = [
        r for r in resources(K8S) if r["kind"] == "Deployment" and r["metadata"]["name"] == name
    ]
    return found


def container(name: str) -> dict[str, Any]:
    [only] = deployment(name)["spec"]["template"]["spec"]["containers"]
    return cast(dict[str, Any], only)


@pytest.mark.parametrize("folder", [K8S, K8S / "nats"], ids=["services", "nats"])
def test_every_manifest_is_a_valid_kubernetes_resource(folder: Path) -> None:
    found = resources(folder)
    assert found
    for resource in found:
        kubernetes_validate.validate(resource, KUBERNETES, strict=True)


@pytest.mark.parametrize("name", ["gateway", *WORKERS])
def test_each_service_runs_as_non_root_with_requests_limits_and_probes(name: str) -> None:
    spec = deployment(name)["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    main = container(name)
    assert main["command"] == ["python", "-m", f"services.{name}"]
    assert {"cpu", "memory"} <= set(main["resources"]["requests"])
    assert "memory" in main["resources"]["limits"]
    assert main["readinessProbe"]
    assert main["livenessProbe"]
    assert {"configMapRef": {"name": "elizamesh"}} in main["envFrom"]


@pytest.mark.parametrize("name", WORKERS)
def test_a_worker_is_ready_when_its_own_instance_answers_health(name: str) -> None:
    probe = ["elizamesh", "health", "--this-host", "--service", name]
    main = container(name)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[kind]["exec"]["command"] == probe


def test_the_gateway_is_live_on_health_and_ready_on_readiness() -> None:
    main = container("gateway")
    assert main["livenessProbe"]["httpGet"]["path"] == "/v1/health"
    assert main["readinessProbe"]["httpGet"]["path"] == "/v1/ready"
    [service] = [r for r in resources(K8S) if r["kind"] == "Service"]
    assert service["spec"]["selector"] == deployment("gateway")["spec"]["selector"]["matchLabels"]


def test_services_scale_out_and_only_memory_reads_the_database() -> None:
    assert deployment("runtime")["spec"]["replicas"] >= 2
    for name in ("gateway", *WORKERS):
        reads = {e["name"] for e in container(name).get("env", [])}
        assert ("DATABASE_URL" in reads) == (name == "memory")


def test_streams_are_kept_on_the_three_nodes_of_the_nats_cluster() -> None:
    [config] = [r for r in resources(K8S) if r["kind"] == "ConfigMap"]
    assert config["data"]["JETSTREAM_REPLICAS"] == "3"
    [nats] = [r for r in resources(K8S / "nats") if r["kind"] == "StatefulSet"]
    assert nats["spec"]["replicas"] == 3
    conf = (K8S / "nats" / "nats.conf").read_text()
    assert conf.count("nats://nats-") == 3
    assert "jetstream" in conf


def test_nats_server_accepts_the_cluster_config() -> None:
    checked = subprocess.run(
        [str(nats_server_binary()), "-t", "-c", str(K8S / "nats" / "nats.conf")],
        # accounts.conf reads each user's password from the environment (the nats-passwords secret).
        env={**os.environ, "POD_NAME": "nats-0", **_nats_passwords()},
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout


def _nats_passwords() -> dict[str, str]:
    [secret] = [r for r in resources(K8S / "nats") if r["kind"] == "Secret"]
    return cast(dict[str, str], secret["stringData"])
