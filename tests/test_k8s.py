"""The Kubernetes manifests (``python -m balancer.k8s``): valid against Kubernetes' own schemas
(``kubernetes-validate``, offline), and the balancer's haproxy.cfg accepted by ``haproxy -c``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from balancer.haproxy import validate_config, write_config
from balancer.k8s import BALANCER, STATS_PASSWORD_ENV, WEB, WORKER
from bench.harness.processes import REPO
from webui.contract import HEALTH_PATH, READY_PATH

KUBERNETES_VERSION = "1.37.0"
EXAMPLE = REPO / "assets" / "cluster.example.yaml"


def k8s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "balancer.k8s", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    result = k8s("--cluster", str(EXAMPLE), "--public-host", "studio.example.com", "--workers", "3")
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(documents: list[dict], kind: str, name: str) -> dict:
    return next(doc for doc in documents if doc["kind"] == kind and doc["metadata"]["name"] == name)


def test_every_manifest_is_valid_kubernetes(documents: list[dict]) -> None:
    kinds = sorted({doc["kind"] for doc in documents})
    assert kinds == ["ConfigMap", "Deployment", "Namespace", "NetworkPolicy", "PodDisruptionBudget", "Service"]
    for doc in documents:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_workers_get_a_gpu_each_probes_and_limits(documents: list[dict]) -> None:
    workers = find(documents, "Deployment", WORKER)
    assert workers["spec"]["replicas"] == 3
    (worker,) = workers["spec"]["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["readinessProbe"]["httpGet"]["path"] == READY_PATH
    assert worker["livenessProbe"]["httpGet"]["path"] == HEALTH_PATH
    for name in (WORKER, WEB, BALANCER):
        for container in find(documents, "Deployment", name)["spec"]["template"]["spec"]["containers"]:
            assert container["resources"]["limits"]["memory"], f"{name}: an OOM must kill only this pod"
        assert find(documents, "PodDisruptionBudget", name)["spec"]["maxUnavailable"] == 1
    for name in (WORKER, WEB):
        assert find(documents, "Service", name)["spec"]["clusterIP"] == "None"  # headless: DNS lists the pods


def test_nodes_accept_connections_only_from_the_balancer(documents: list[dict]) -> None:
    for target in (WORKER, WEB):
        policy = find(documents, "NetworkPolicy", f"{target}-from-balancer")
        (rule,) = policy["spec"]["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "portrait-ha", "app.kubernetes.io/component": BALANCER}}}]


def test_balancer_config_finds_pods_in_dns_and_passes_haproxy_check(
        documents: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = find(documents, "ConfigMap", BALANCER)["data"]["haproxy.cfg"]
    assert "resolvers k8s" in text and "parse-resolv-conf" in text
    for service, kind in ((WEB, "web"), (WORKER, "worker"), (WORKER, "probe")):
        assert f"server-template {kind} 1-16 {service}.portrait-ha.svc.cluster.local:" in text
    assert "init-addr none" in text
    assert "studio.example.com" in text
    assert f'"${{{STATS_PASSWORD_ENV}}}"' in text  # the password comes from the Secret, not the manifests
    monkeypatch.setenv(STATS_PASSWORD_ENV, "test-password")
    validate_config(write_config(text, tmp_path / "haproxy.cfg"))


def test_web_fronts_send_jobs_to_the_queue_service(documents: list[dict]) -> None:
    (web,) = find(documents, "Deployment", WEB)["spec"]["template"]["spec"]["containers"]
    queue = web["args"][web["args"].index("--worker-queue") + 1]
    assert queue == "http://portrait-queue.portrait-ha.svc.cluster.local:8081"


@pytest.mark.parametrize("args, message", [
    (["--cluster", str(EXAMPLE)], "--public-host"),
    (["--public-host", "a.example", "--workers", "20"], "--max-pods 16"),
    (["--cluster", "/no/such/file.yaml", "--public-host", "a.example"], "cannot read cluster file"),
])
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = k8s(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
