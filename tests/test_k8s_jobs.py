"""The jobs service in the Kubernetes manifests (``python -m balancer.deploy``): a Deployment of two pods and a
headless Service, valid against Kubernetes' schemas, its store URL and keys only in Secrets; SQLite refused for
two pods; and the rendered pods at work: two real ``python -m jobs`` started from the Deployment's own command,
arguments and environment (Secrets filled in, mounts on temp dirs) behind a real HAProxy whose ``jobs`` backend
finds them in a real DNS server (dnslib), both serving the same jobs, one surviving the other's death."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
from dnslib.server import DNSLogger, DNSServer

from balancer.config.loading import parse_cluster
from balancer.deploy.dns_servers import DnsServers
from balancer.deploy.kube_objects import BALANCER, QUEUE_SERVICE, WEB, WORKER
from balancer.haproxy.config import HAProxyConfigRenderer
from balancer.haproxy.names import JOBS_BACKEND
from balancer.haproxy.process import HAProxyProcess, RuntimeAPI, write_config
from balancer.operations.parts import replace_flag
from bench.harness.balancer import cluster_data
from bench.harness.processes import Processes, free_port, kill_tree
from bench.harness.waiting import wait_http, wait_until
from jobs.api.share_tokens import new_key
from jobs.webhooks.signing import new_secret
from tests.test_k8s import EXAMPLE, KUBERNETES_VERSION, ClusterDns, documents, find, k8s
from webui.contract import CLUSTER_SECRET_ENV, CLUSTER_SECRET_HEADER, HEALTH_PATH, READY_PATH

__all__ = ["documents"]  # the rendered manifests, shared with tests/test_k8s.py

JOB = {"prompt": "a studio portrait", "width": 64, "height": 64, "steps": 8}
JOBS = "portrait-jobs"
STORE_SECRET, KEYS_SECRET, CLUSTER_SECRET = "portrait-jobs-store", "portrait-jobs-keys", "portrait-cluster"
"""The names an operator uses (docs/kubernetes.md): the jobs Deployment and Service, the Secrets to create."""


def jobs_container(documents: list[dict]) -> dict[str, Any]:
    (container,) = find(documents, "Deployment", JOBS)["spec"]["template"]["spec"]["containers"]
    return container


def test_jobs_service_is_a_deployment_and_service_with_probes_and_secrets(documents: list[dict]) -> None:
    deployment, service = find(documents, "Deployment", JOBS), find(documents, "Service", JOBS)
    for doc in (deployment, service, find(documents, "PodDisruptionBudget", JOBS),
                find(documents, "NetworkPolicy", f"{JOBS}-from-balancer")):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert deployment["spec"]["replicas"] == 2
    container = jobs_container(documents)
    assert container["command"] == ["python", "-m", "jobs"]
    (port,) = service["spec"]["ports"]
    assert service["spec"]["clusterIP"] == "None"  # headless: DNS lists the ready pods
    assert container["ports"][0]["containerPort"] == port["targetPort"] == port["port"]
    assert container["readinessProbe"]["httpGet"] == {"path": READY_PATH, "port": port["port"]}
    assert container["livenessProbe"]["httpGet"] == {"path": HEALTH_PATH, "port": port["port"]}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    refs = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"] if "valueFrom" in item}
    assert refs == {"PORTRAIT_JOBS_STORE_URL": {"name": STORE_SECRET, "key": "url"},
                    CLUSTER_SECRET_ENV: {"name": CLUSTER_SECRET, "key": "secret"}}
    assert "postgresql" not in str(deployment)  # the store's URL only in its Secret
    pod = deployment["spec"]["template"]["spec"]
    (keys,) = [volume for volume in pod["volumes"] if "secret" in volume]
    assert keys["secret"]["secretName"] == KEYS_SECRET
    (mount,) = [mount for mount in container["volumeMounts"] if mount["name"] == keys["name"]]
    assert mount["readOnly"] is True
    for flag in ("--webhook-secret-file", "--share-key-file"):
        assert Path(container["args"][container["args"].index(flag) + 1]).parent == Path(mount["mountPath"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    queue = container["args"][container["args"].index("--worker-queue-url") + 1]
    assert queue == f"http://{QUEUE_SERVICE}.portrait-ha.svc.cluster.local:8081"
    (web,) = find(documents, "Deployment", WEB)["spec"]["template"]["spec"]["containers"]
    assert web["args"][web["args"].index("--jobs-url") + 1] == queue  # jobs.web_fronts: the queue passes them on
    (worker,) = find(documents, "Deployment", WORKER)["spec"]["template"]["spec"]["containers"]
    assert worker["args"][worker["args"].index("--jobs-url") + 1] == queue  # where it records its REST jobs
    for name in (BALANCER, WEB, WORKER):  # HAProxy adds the secret the service asks for; the others show it
        (part,) = find(documents, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert {"name": CLUSTER_SECRET_ENV, "valueFrom": {"secretKeyRef": {"name": CLUSTER_SECRET, "key": "secret"}}} \
            in part["env"]


def test_balancer_jobs_backend_names_the_jobs_service(documents: list[dict]) -> None:
    text = find(documents, "ConfigMap", BALANCER)["data"]["haproxy.cfg"]
    service = find(documents, "Service", JOBS)
    address = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    backend = text.split(f"\nbackend {JOBS_BACKEND}\n", 1)[1].split("\n\n", 1)[0]
    assert f"server-template jobs 1-16 {address}:{service['spec']['ports'][0]['port']} resolvers k8s" in backend
    ingress = find(documents, "NetworkPolicy", f"{BALANCER}-ingress")["spec"]["ingress"]
    queue_sources = [rule["from"] for rule in ingress if "from" in rule]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "portrait-ha",
                                            "app.kubernetes.io/component": JOBS}}} in queue_sources[0]


def test_sqlite_store_with_two_jobs_pods_is_refused_in_words(tmp_path: Path) -> None:
    refused = k8s("--cluster", str(EXAMPLE), "--public-host", "studio.example.com")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert "jobs.store_url" in refused.stderr and "PostgreSQL" in refused.stderr and "SQLite" in refused.stderr
    alone = k8s("--cluster", str(EXAMPLE), "--public-host", "studio.example.com", "--jobs", "1")
    assert alone.returncode == 0, alone.stderr
    assert STORE_SECRET not in alone.stdout  # one pod on SQLite: its run directory holds the store


class Pod:
    """A jobs pod from the rendered container: its command, arguments and environment, the Secrets' values filled
    in, its mounts on temp dirs, listening on its own loopback address as a pod on its own IP does."""

    def __init__(self, container: dict[str, Any], secrets: dict[tuple[str, str], str], root: Path,
                 address: str, port: int) -> None:
        self.address, self.port = address, port
        mounts = {mount["mountPath"]: root / mount["name"] for mount in container["volumeMounts"]}
        for directory in mounts.values():
            directory.mkdir(parents=True, exist_ok=True)
        for name, value in secrets.items():
            if name[0] == KEYS_SECRET:  # the Secret volume: a file per key
                (root / "keys" / name[1]).write_text(value + "\n")
        args = [self._mounted(arg, mounts) for arg in container["args"]]
        args = replace_flag(replace_flag(args, "--host", address), "--port", str(port))
        # Nothing listens on the worker queue here: the subject is the jobs API, not dispatch.
        self.args = [*container["command"], *replace_flag(args, "--worker-queue-url", f"http://127.0.0.1:{free_port()}")]
        self.env = {item["name"]: item.get("value") or secrets[self._ref(item)] for item in container["env"]}

    @staticmethod
    def _mounted(arg: str, mounts: dict[str, Path]) -> str:
        for path, local in mounts.items():
            if arg == path or arg.startswith(path + "/"):
                return str(local / Path(arg).relative_to(path))
        return arg

    @staticmethod
    def _ref(item: dict[str, Any]) -> tuple[str, str]:
        ref = item["valueFrom"]["secretKeyRef"]
        return ref["name"], ref["key"]

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


def test_haproxy_serves_jobs_from_every_rendered_pod_and_survives_one(documents: list[dict], tmp_path: Path) -> None:
    """Two pods of the rendered Deployment on one store behind HAProxy (the jobs backend's slots from DNS): both
    serve, each sees the job the other took (one truth), the service refuses what does not come through HAProxy,
    and with one pod SIGKILLed every read is still answered."""
    secret = "k8s-jobs-test-cluster-secret"
    secrets = {(CLUSTER_SECRET, "secret"): secret, (STORE_SECRET, "url"): f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
               (KEYS_SECRET, "webhook-secret"): new_secret(), (KEYS_SECRET, "share-key"): new_key()}
    port = free_port()
    pods = [Pod(jobs_container(documents), secrets, tmp_path / name, address, port)
            for name, address in (("pod-a", "127.0.0.2"), ("pod-b", "127.0.0.3"))]
    dns = ClusterDns()
    dns_server = DNSServer(dns, address="127.0.0.1", port=free_port(), logger=DNSLogger(logf=lambda line: None))
    dns_server.start_thread()
    servers = DnsServers("test", "cluster.local", max_pods=4, jobs_port=port, hold_obsolete=1,
                         nameservers=[f"127.0.0.1:{dns_server.server.server_address[1]}"])
    spec = parse_cluster(cluster_data(tmp_path / "balancer", [], [], jobs={"port": port}))
    try:
        with Processes("k8s-jobs") as processes:
            procs = [processes.start(pod.args, env=pod.env, log_name=f"k8s-{pod.address}") for pod in pods]
            for pod, proc in zip(pods, procs, strict=True):
                wait_http(pod.url + READY_PATH, proc=proc, timeout=60)
                assert httpx.get(pod.url + HEALTH_PATH, timeout=10).status_code == 200
            dns.records = {servers.fqdn(JOBS): [pod.address for pod in pods]}
            config = write_config(HAProxyConfigRenderer(spec, servers=servers).render(), spec.config_path)
            haproxy = HAProxyProcess(config, spec.socket_path, tmp_path / "haproxy.log",
                                     env={**os.environ, CLUSTER_SECRET_ENV: secret})
            haproxy.start()
            try:
                api = RuntimeAPI(spec.socket_path)

                def jobs_up() -> int:
                    return sum(server.is_up for server in api.servers(JOBS_BACKEND))

                wait_until(lambda: jobs_up() == 2, "both jobs pods UP", timeout=30, interval=0.2)
                public = spec.public.url
                accepted = httpx.post(f"{public}/v1/jobs", json=JOB, timeout=30)
                assert accepted.status_code == 202, accepted.text
                job = accepted.json()["id"]
                for pod in pods:  # each pod has the job, whichever took it
                    answer = httpx.get(f"{pod.url}/v1/jobs/{job}", headers={CLUSTER_SECRET_HEADER: secret}, timeout=10)
                    assert answer.status_code == 200 and answer.json()["id"] == job
                around = httpx.get(f"{pods[0].url}/v1/jobs/{job}", timeout=10)  # not through HAProxy
                assert around.status_code == 403 and around.json()["error"] == "not_a_cluster_part"
                served = {server.server: server.total_sessions for server in api.servers(JOBS_BACKEND)}
                reads = [httpx.get(f"{public}/v1/jobs/{job}", timeout=30) for _ in range(6)]
                assert [answer.status_code for answer in reads] == [200] * 6
                after = {server.server: server.total_sessions for server in api.servers(JOBS_BACKEND)}
                assert sum(after[name] > served.get(name, 0) for name in after) == 2  # both pods served reads
                kill_tree(procs[0].pid, signal.SIGKILL)
                procs[0].wait(timeout=10)
                reads = [httpx.get(f"{public}/v1/jobs/{job}", timeout=30) for _ in range(6)]
                assert [answer.status_code for answer in reads] == [200] * 6
            finally:
                haproxy.stop()
    finally:
        dns_server.stop()
