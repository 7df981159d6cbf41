"""The Kubernetes manifests (``python -m balancer.deploy``): valid against Kubernetes' own schemas
(``kubernetes-validate``, offline), the balancer's haproxy.cfg accepted by ``haproxy -c``, and its
DNS discovery (``resolvers`` + ``server-template``) working in a real HAProxy against a real DNS
server (dnslib) on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from balancer.config.access import STATS_PASSWORD_ENV
from balancer.config.loading import parse_cluster
from balancer.deploy.dns_servers import DnsServers
from balancer.deploy.kube_objects import BALANCER, WEB, WORKER
from balancer.haproxy.config import WEBS_BACKEND, WORKERS_BACKEND, HAProxyConfigRenderer
from balancer.haproxy.process import HAProxyProcess, RuntimeAPI, validate_config, write_config
from bench.harness.processes import REPO, Processes, free_port
from bench.harness.waiting import wait_http, wait_until
from tests.balancer_helpers import cluster_data, fake_command
from webui.contract import HEALTH_PATH, READY_PATH

KUBERNETES_VERSION = "1.37.0"
EXAMPLE = REPO / "assets" / "cluster.example.yaml"


def k8s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "balancer.deploy", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


STORE_URL = "postgresql+psycopg://jobs@db.example.com/jobs"
"""The jobs service's shared store, named in the cluster file (its password goes in a Secret)."""


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The example cluster file with a PostgreSQL job store, rendered for 3 workers."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["jobs"]["store_url"] = STORE_URL
    cluster = tmp_path_factory.mktemp("k8s") / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(data))
    result = k8s("--cluster", str(cluster), "--public-host", "studio.example.com", "--workers", "3")
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
    assert web["args"].count("--jobs-url") == 1 and "--sign-in" not in web["args"]


def test_web_fronts_ask_for_sign_in_when_the_cluster_file_does(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["jobs"].update(store_url=STORE_URL, sign_in=True)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(data))
    result = k8s("--cluster", str(cluster), "--public-host", "studio.example.com")
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (web,) = find(rendered, "Deployment", WEB)["spec"]["template"]["spec"]["containers"]
    assert "--sign-in" in web["args"] and web["args"].count("--jobs-url") == 1


@pytest.mark.parametrize("args, message", [
    (["--cluster", str(EXAMPLE)], "--public-host"),
    (["--public-host", "a.example", "--workers", "20"], "--max-pods 16"),
    (["--cluster", "/no/such/file.yaml", "--public-host", "a.example"], "cannot read cluster file"),
])
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = k8s(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


class ClusterDns(BaseResolver):
    """The cluster's DNS for one test: A records per name, changed while HAProxy runs (dnslib's UDP server)."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        if name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            for address in self.records[name]:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=1))
        return reply


def workers_up(api: RuntimeAPI) -> list[str]:
    return [server.server for server in api.servers(WORKERS_BACKEND) if server.is_up]


def test_haproxy_fills_its_server_slots_from_dns_and_follows_it(tmp_path: Path) -> None:
    """The rendered resolvers + server-template lines at work: pods (stand-in nodes on 127.0.0.x)
    appear in DNS and take jobs; a pod gone from DNS leaves rotation (after a 1 s ``hold obsolete``)."""
    dns = ClusterDns()
    dns_server = DNSServer(dns, address="127.0.0.1", port=free_port(), logger=DNSLogger(logf=lambda line: None))
    dns_server.start_thread()
    web_port, worker_port = free_port(), free_port()
    servers = DnsServers("test", "cluster.local", max_pods=4, web_port=web_port, worker_port=worker_port,
                         nameservers=[f"127.0.0.1:{dns_server.server.server_address[1]}"], hold_obsolete=1)
    spec = parse_cluster(cluster_data(tmp_path, [], []))
    pods = {"pod-a": "127.0.0.2", "pod-b": "127.0.0.3"}
    try:
        with Processes("k8s-dns") as processes:
            for name, address in [*pods.items(), ("web-pod", "127.0.0.4")]:
                port = web_port if name == "web-pod" else worker_port
                proc = processes.start(fake_command(name, port, "--host", address), log_name=f"fake-{name}")
                wait_http(f"http://{address}:{port}/readyz", proc=proc, timeout=30)
            dns.records = {servers.fqdn(WORKER): list(pods.values()), servers.fqdn(WEB): ["127.0.0.4"]}
            config = write_config(HAProxyConfigRenderer(spec, servers=servers).render(), spec.config_path)
            haproxy = HAProxyProcess(config, spec.socket_path, tmp_path / "haproxy.log")
            haproxy.start()
            try:
                api = RuntimeAPI(spec.socket_path)
                wait_until(lambda: len(workers_up(api)) == 2, "both worker pods UP", timeout=30, interval=0.2)
                wait_until(lambda: api.server(WEBS_BACKEND, "web1").is_up, "the web pod UP", timeout=30, interval=0.2)

                def answered_by(count: int) -> set[str]:
                    url = f"{spec.public.url}/generate"
                    return {httpx.post(url, json={"prompt": "x"}, timeout=10).json()["worker_id"] for _ in range(count)}

                assert answered_by(6) == set(pods)
                assert httpx.get(f"{spec.public.url}/", timeout=10).json()["name"] == "web-pod"

                dns.records[servers.fqdn(WORKER)] = [pods["pod-a"]]  # pod-b is gone (or no longer ready)
                wait_until(lambda: len(workers_up(api)) == 1, "pod-b out of rotation", timeout=40, interval=0.5)
                assert answered_by(4) == {"pod-a"}
            finally:
                haproxy.stop()
    finally:
        dns_server.stop()
