"""deploy/k8s: every overlay renders with kubectl's kustomize and passes kubernetes-validate --strict (Kubernetes
1.37 schemas), and what matters holds: GPUs on Triton in the gpu overlay, probes on every container, images pinned by
tag, no secret values in the manifests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.37.0"  # the newest schema set kubernetes-validate 1.37.0 ships
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def _render(folder: Path) -> list[dict]:
    rendered = subprocess.run([str(BIN / "kubectl"), "kustomize", str(folder)], capture_output=True, text=True,
                              timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def overlay(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict], Path]:
    documents = _render(K8S / "overlays" / request.param)
    path = tmp_path_factory.mktemp("k8s") / f"{request.param}.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return request.param, documents, path


def _pod_specs(documents: list[dict]) -> dict[str, dict]:
    return {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"] for d in documents
            if d["kind"] in WORKLOADS}


def test_overlay_validates_strictly(overlay: tuple[str, list[dict], Path]) -> None:
    name, documents, path = overlay
    result = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION,
                             str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    for expected in [("Deployment", "sluice-orchestrator"), ("Deployment", "sluice-control-plane"),
                     ("Deployment", "sluice-edge"), ("StatefulSet", "sluice-triton"),
                     ("HorizontalPodAutoscaler", "sluice-orchestrator"),
                     ("PodDisruptionBudget", "sluice-orchestrator"), ("PodDisruptionBudget", "sluice-control-plane")]:
        assert expected in kinds, expected
    assert all(d["metadata"].get("namespace") == "sluice" for d in documents)
    assert not any(d["kind"] in ("ServiceMonitor", "PrometheusRule") for d in documents)  # optional, elsewhere


def test_every_container_is_probed_and_sized_and_every_image_pinned(overlay: tuple[str, list[dict], Path]) -> None:
    _, documents, _ = overlay
    for workload, spec in _pod_specs(documents).items():
        for container in spec["containers"]:
            where = f"{workload}/{container['name']}"
            assert "readinessProbe" in container and "livenessProbe" in container, where
            assert container.get("resources", {}).get("requests"), where
        for container in spec["containers"] + spec.get("initContainers", []):
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (workload, image)
    grpc_probed = {c["name"] for spec in _pod_specs(documents).values() for c in spec["containers"]
                   if "grpc" in c["readinessProbe"] and "grpc" in c["livenessProbe"]}
    assert {"orchestrator", "safety", "retrieval", "control-plane"} <= grpc_probed


def test_no_secret_values_in_the_manifests(overlay: tuple[str, list[dict], Path]) -> None:
    _, documents, _ = overlay
    assert not [d for d in documents if d["kind"] == "Secret"]
    settings = next(d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(
        "sluice-settings"))
    for key, value in settings["data"].items():
        assert not any(word in key for word in ("DATABASE", "REDIS", "PASSWORD", "TOKEN", "KEY")), key
        assert "@" not in value and "://" not in value, (key, value)  # no credentials-bearing URL
    orchestrator = _pod_specs(documents)["Deployment/sluice-orchestrator"]["containers"][0]
    assert {"secretRef": {"name": "sluice-backends"}} in orchestrator["envFrom"]


def test_gpu_overlay_puts_triton_on_a_gpu_with_tensorrt_llm(overlay: tuple[str, list[dict], Path]) -> None:
    name, documents, _ = overlay
    triton = _pod_specs(documents)["StatefulSet/sluice-triton"]
    (server,) = triton["containers"]
    gpus = server["resources"].get("limits", {}).get("nvidia.com/gpu")
    if name == "cpu":
        assert gpus is None and server["command"][:3] == ["python", "-m", "services.supervisor.triton_pod"]
        return
    assert gpus == 1 and server["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert server["command"][0] == "tritonserver"
    init = {c["name"]: c for c in triton["initContainers"]}
    assert "pipelines.trtllm_engine" in " ".join(init["engine-build"]["command"])
    assert init["render-repository"]["command"] == ["sluice", "repo", "render", "--engine", "trtllm", "--out",
                                                    "/data/run/model_repository"]


def test_the_optional_monitoring_folder_renders() -> None:
    kinds = sorted(d["kind"] for d in _render(K8S / "monitoring"))
    assert kinds == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
