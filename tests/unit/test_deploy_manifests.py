"""deploy/compose and deploy/k8s: the compose file and the kustomize base are sound.

``docker compose`` is not installed where these tests were written, so the compose file is
checked by the schema-level rules below; the Kubernetes manifests are validated against
the API schemas by ``kubernetes-validate``, rendered by ``kubectl kustomize`` where it is
installed and else by hand (the base is a plain list of resources in one namespace).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.32.0"


def compose() -> dict[str, Any]:
    """The compose file with its YAML anchors and merge keys resolved."""
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_compose_runs_a_coordinator_and_three_sites() -> None:
    services = compose()["services"]
    assert sorted(services) == ["coordinator", "hospital-1", "hospital-2", "hospital-3"]
    assert services["coordinator"]["image"] == "baton-coordinator:latest"
    assert services["coordinator"]["ports"] == ["7443:7443"]
    for name in ("hospital-1", "hospital-2", "hospital-3"):
        site = services[name]
        assert site["image"] == "baton-site:latest"
        assert "ports" not in site  # a site only dials out
        assert set(site["depends_on"]) == {"coordinator"}
        mounts = {m.split(":")[1]: m for m in site["volumes"]}
        assert mounts["/etc/baton"] == f"./kits/sites/{name}:/etc/baton:ro"
        assert mounts["/var/lib/baton-site/data"].endswith(":ro")
        assert mounts["/var/lib/baton-site/work"] == f"{name}-work:/var/lib/baton-site/work"


def test_compose_services_are_hardened_and_volumes_declared() -> None:
    data = compose()
    declared = set(data["volumes"])
    used: set[str] = set()
    for name, service in data["services"].items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["user"] == "10001:10001", name
        assert service["tmpfs"] == ["/tmp"], name
        assert set(service["networks"]) <= set(data["networks"]), name
        for mount in service["volumes"]:
            source, target, *mode = mount.split(":")
            assert target.startswith(("/etc/baton", "/var/lib/")), mount
            if source.startswith("./"):
                assert mode == ["ro"], f"{name}: bind mount {mount} must be read-only"
            else:
                used.add(source)
    assert used == declared
    assert "coordinator-state" in used


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_compose_config_when_docker_compose_exists(tmp_path: Path) -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed: checked by the schema rules above")
    out = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def render_kustomization() -> list[dict[str, Any]]:
    """The base's resources as ``kubectl kustomize`` renders them, or as listed when it
    is not installed (namespace and labels applied by hand)."""
    if shutil.which("kubectl"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True
        )
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    docs = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text(encoding="utf-8")):
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = kustomization["namespace"]
            docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """The rendered base."""
    return render_kustomization()


def test_manifests_validate_against_the_kubernetes_schemas(
    manifests: list[dict[str, Any]],
) -> None:
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in manifests)
    for doc in manifests:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    for wanted in (
        "StatefulSet/baton-coordinator",
        "Service/baton-coordinator",
        "Secret/baton-coordinator-tls",
        "NetworkPolicy/baton-coordinator",
        "Deployment/baton-site",
        "NetworkPolicy/baton-site",
    ):
        assert wanted in kinds
    assert {d["metadata"].get("namespace") for d in manifests if d["kind"] != "Namespace"} == {
        "baton"
    }


def test_validator_rejects_a_broken_manifest(manifests: list[dict[str, Any]]) -> None:
    statefulset = next(d for d in manifests if d["kind"] == "StatefulSet")
    broken = yaml.safe_load(yaml.safe_dump(statefulset))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_coordinator_keeps_state_on_a_claim_and_certificates_in_a_secret(
    manifests: list[dict[str, Any]],
) -> None:
    sts = next(d for d in manifests if d["kind"] == "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["state"]
    pod = sts["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["state"]["mountPath"] == "/var/lib/baton"
    assert mounts["tls"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "baton-coordinator-tls"


def test_pods_run_unprivileged(manifests: list[dict[str, Any]]) -> None:
    for doc in manifests:
        if doc["kind"] not in ("StatefulSet", "Deployment"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]


def test_network_policies_fence_both_roles(manifests: list[dict[str, Any]]) -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in manifests if d["kind"] == "NetworkPolicy"}
    coordinator, site = policies["baton-coordinator"], policies["baton-site"]
    assert coordinator["egress"] == []
    assert [p["port"] for rule in coordinator["ingress"] for p in rule["ports"]] == [7443]
    assert site["ingress"] == []
    assert {p["port"] for rule in site["egress"] for p in rule["ports"]} == {7443, 53}


def test_kubelet_and_compose_probe_the_probe_port_the_configs_open(
    manifests: list[dict[str, Any]],
) -> None:
    import tomllib

    configs = {d["metadata"]["name"]: d["data"] for d in manifests if d["kind"] == "ConfigMap"}
    for name, key in (("baton-coordinator-config", "coordinator.toml"),
                      ("baton-site-config", "site.toml")):  # fmt: skip
        assert tomllib.loads(configs[name][key])["probe"]["listen"] == "0.0.0.0:8080"
    pods = [d for d in manifests if d["kind"] in ("StatefulSet", "Deployment")]
    assert len(pods) == 2
    for pod in pods:
        container = pod["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["probe"] == 8080
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probe"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "probe"}
    services = compose()["services"]
    assert "8080/readyz" in " ".join(services["coordinator"]["healthcheck"]["test"])
    assert services["hospital-1"]["depends_on"]["coordinator"]["condition"] == "service_healthy"
