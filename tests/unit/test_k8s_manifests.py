"""The Kubernetes manifests are valid resources and say what each service needs to run.

Checked against the Kubernetes API schemas (strict: an unknown field fails),
since no cluster answers here; the NATS cluster config is checked by nats-server;
every pod against the Pod Security Standards' "restricted" profile, whose rules
(https://kubernetes.io/docs/concepts/security/pod-security-standards/, v1.30)
``restricted_violations`` states one by one, as the admission controller applies them.
"""

from __future__ import annotations

import os
import re
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
    # The small probe module, not the CLI: over a second of CPU per run in every pod.
    probe = ["python", "-m", "shared.probe", name]
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
    """A password for every variable accounts.conf names (the nats-passwords secret holds them)."""
    conf = (K8S / "nats" / "accounts.conf").read_text()
    return {name: f"test-{name.lower()}" for name in re.findall(r"\$(ELIZA_\w+)", conf)}


# The Pod Security Standards' baseline and restricted rules (Kubernetes 1.30).
_RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every rule of the "restricted" profile that ``pod`` (a PodSpec) breaks, as a sentence."""
    pod_context = pod.get("securityContext", {})
    broken = [
        f"{field} is true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)
    ]
    broken += [
        f"volume {volume['name']} is of type {sorted(set(volume) - {'name'})}"
        for volume in pod.get("volumes", [])
        if not set(volume) - {"name"} <= _RESTRICTED_VOLUMES
    ]
    broken += [
        f"sysctl {sysctl['name']} is not safe"
        for sysctl in pod_context.get("sysctls", [])
        if sysctl["name"] not in _SAFE_SYSCTLS
    ]
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for each in pod.get(kind, []):
            broken += _container_violations(each, pod_context)
    return broken


def _container_violations(each: dict[str, Any], pod_context: dict[str, Any]) -> list[str]:
    context = each.get("securityContext", {})

    def setting(key: str) -> Any:
        # A container's own setting wins over the pod's.
        return context.get(key, pod_context.get(key))

    selinux = setting("seLinuxOptions") or {}
    capabilities = context.get("capabilities", {})
    added = set(capabilities.get("add", []))
    rules = {
        "is privileged": context.get("privileged") is True,
        "is a Windows host process": (setting("windowsOptions") or {}).get("hostProcess") is True,
        "uses a host port": any(port.get("hostPort") for port in each.get("ports", [])),
        "unmasks /proc": context.get("procMount", "Default") != "Default",
        "sets SELinux options beyond the allowed types": (
            selinux.get("type", "") not in _SELINUX_TYPES or bool({"user", "role"} & set(selinux))
        ),
        "runs with an AppArmor profile other than RuntimeDefault or Localhost": (
            (setting("appArmorProfile") or {}).get("type", "RuntimeDefault")
            not in {"RuntimeDefault", "Localhost"}
        ),
        "does not set allowPrivilegeEscalation: false": (
            context.get("allowPrivilegeEscalation") is not False
        ),
        "does not set runAsNonRoot: true": setting("runAsNonRoot") is not True,
        "runs as user 0": setting("runAsUser") == 0,
        "has no seccompProfile RuntimeDefault or Localhost": (
            (setting("seccompProfile") or {}).get("type") not in {"RuntimeDefault", "Localhost"}
        ),
        "does not drop ALL capabilities": "ALL" not in capabilities.get("drop", []),
        f"adds capabilities {sorted(added)}": not added <= {"NET_BIND_SERVICE"},
    }
    return [f"container {each['name']} {rule}" for rule, broken in rules.items() if broken]


def pod_specs(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """The pod template of every workload in ``folder``'s kustomization, by workload name."""
    return [
        (r["metadata"]["name"], r["spec"]["template"]["spec"])
        for r in resources(folder)
        if r["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    ]


@pytest.mark.parametrize("folder", [K8S, K8S / "nats"], ids=["services", "nats"])
def test_every_pod_passes_the_restricted_pod_security_profile(folder: Path) -> None:
    pods = pod_specs(folder)
    assert pods
    assert {name: restricted_violations(pod) for name, pod in pods} == {
        name: [] for name, _ in pods
    }


def test_the_restricted_check_rejects_the_pod_it_should() -> None:
    # The manifests' pods before they were hardened: only non-root was set.
    loose = {
        "securityContext": {"runAsNonRoot": True},
        "volumes": [{"name": "host", "hostPath": {"path": "/var/run"}}],
        "containers": [
            {"name": "main", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}
        ],
    }
    assert restricted_violations(loose) == [
        "volume host is of type ['hostPath']",
        "container main does not set allowPrivilegeEscalation: false",
        "container main has no seccompProfile RuntimeDefault or Localhost",
        "container main does not drop ALL capabilities",
        "container main adds capabilities ['SYS_ADMIN']",
    ]


@pytest.mark.parametrize("folder", [K8S, K8S / "nats"], ids=["services", "nats"])
def test_applying_ships_no_secret_so_it_never_overwrites_the_users(folder: Path) -> None:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert "secretGenerator" not in kustomization
    assert [r["metadata"]["name"] for r in resources(folder) if r["kind"] == "Secret"] == []


def test_every_secret_a_pod_reads_is_documented_for_the_user_to_create() -> None:
    named = {
        ref["name"]
        for _, pod in [*pod_specs(K8S), *pod_specs(K8S / "nats")]
        for each in pod["containers"]
        for ref in [
            *(
                e["valueFrom"]["secretKeyRef"]
                for e in each.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            ),
            *(e["secretRef"] for e in each.get("envFrom", []) if "secretRef" in e),
        ]
    }
    assert named == {"elizamesh-nats", "elizamesh-database", "elizamesh-gateway", "nats-passwords"}
    documented = (K8S / "config.yaml").read_text() + (
        K8S / "nats" / "kustomization.yaml"
    ).read_text()
    for name in named:
        assert f"create secret generic {name}" in documented or name == "elizamesh-gateway"


@pytest.mark.parametrize("folder", [K8S, K8S / "nats"], ids=["services", "nats"])
def test_the_namespace_enforces_the_restricted_profile(folder: Path) -> None:
    [namespace] = [r for r in resources(folder) if r["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
