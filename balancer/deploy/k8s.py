"""``python -m balancer.deploy``: Kubernetes manifests for portrait-ha, from the same cluster file.

The same processes as on a few boxes, with Kubernetes in the sidecar's place (it restarts a dead
or out-of-memory pod; resource limits make an OOM kill one pod, never a neighbour):

- ``portrait-worker``: a Deployment, one GPU per pod (``nvidia.com/gpu: 1``), readiness
  ``/readyz`` (model loaded and warm), liveness ``/healthz``; a headless Service lists its ready pods.
- ``portrait-web``: the Gradio web fronts, a Deployment and a headless Service.
- ``portrait-jobs``: the jobs service (``/v1/jobs``), a Deployment and a headless Service that HAProxy's
  ``jobs`` backend finds its pods in (``balancer.deploy.jobs_part``: its Secrets, the shared store).
- ``portrait-balancer``: HAProxy 2.8 with the ``haproxy.cfg`` that ``balancer.haproxy.config``
  renders for the cluster file (limits, health checks, stickiness, security rules), its servers
  found in DNS (``server-template`` + ``resolvers`` on the headless Services) instead of listed.
  Services: ``portrait`` (public, a LoadBalancer keeping client addresses for the per-client
  limits) and ``portrait-queue`` (the worker queue, for the web fronts).
- a PodDisruptionBudget per Deployment, and NetworkPolicies: workers, web fronts and the jobs
  service accept connections only from the balancer pods (the in-cluster form of "nodes accept
  only their balancers"), the worker queue only from web fronts and the jobs service.

No secret is in the manifests: HAProxy reads the stats page's password from the environment,
which takes it from the Secret ``portrait-stats`` (key ``password``) that the operator creates;
every part takes the cluster secret from ``portrait-cluster`` the same way.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from balancer.config.cluster import ClusterSpec
from balancer.config.loading import load_cluster_file, parse_cluster
from balancer.config.sections import STATS_PASSWORD_ENV, ClusterConfigError, JobsSpec
from balancer.deploy.jobs_part import (
    JOBS,
    JOBS_START_TIMEOUT,
    check_store,
    cluster_secret_env,
    jobs_args,
    jobs_env,
    jobs_mounts,
    jobs_volumes,
)
from balancer.haproxy.config import COOKIE_NAME, COOKIE_OPTIONS, HAProxyConfigRenderer
from webui.contract import HEALTH_PATH, READY_PATH
from webui.settings import WebSettings, WorkerSettings

APP = "portrait-ha"
WORKER, WEB, BALANCER = "portrait-worker", "portrait-web", "portrait-balancer"
PUBLIC_SERVICE, QUEUE_SERVICE = "portrait", "portrait-queue"
STATS_SECRET = "portrait-stats"
RESOLVERS = "k8s"
RUN_DIR = Path("/run/portrait-ha")
"""HAProxy's runtime socket directory in its pod (an emptyDir)."""
HAPROXY_CONFIG_DIR = "/usr/local/etc/haproxy"
"""Where the official haproxy image reads haproxy.cfg."""
WORKER_PORT = WorkerSettings.model_fields["port"].default
WEB_PORT = WebSettings.model_fields["port"].default
IMAGE_UID = 10001
"""The "portrait" user of docker/Dockerfile."""
HAPROXY_UID = 99
"""The "haproxy" user of the official haproxy image."""
WEB_START_TIMEOUT = 300.0
"""Seconds a web front pod may take to serve (imports, Gradio) before its liveness probe counts."""
GRACEFUL_SHUTDOWN = WorkerSettings.model_fields["graceful_shutdown"].default
JOBS_PORT = JobsSpec.model_fields["port"].default


class DnsServers:
    """Server lines for pods found in DNS: ``server-template`` slots filled from a headless Service.

    A headless Service's name resolves to the addresses of its *ready* pods, so a pod enters
    rotation once its readiness probe passes; HAProxy's own checks still run on every slot.
    ``nameservers`` (``host:port``) replace the pod's resolv.conf (tests run their own DNS);
    ``hold_obsolete``: seconds a pod gone from DNS stays in rotation.
    """

    def __init__(self, namespace: str, domain: str, max_pods: int, web_port: int = WEB_PORT,
                 worker_port: int = WORKER_PORT, nameservers: Sequence[str] = (), hold_obsolete: float = 10.0,
                 jobs_port: int = JOBS_PORT) -> None:
        self.namespace = namespace
        self.hold_obsolete = hold_obsolete
        self.domain = domain
        self.max_pods = max_pods
        self.web_port = web_port
        self.worker_port = worker_port
        self.jobs_port = jobs_port
        self.nameservers = list(nameservers)

    def fqdn(self, service: str) -> str:
        """A Service's DNS name (HAProxy's resolvers use no search domains)."""
        return f"{service}.{self.namespace}.svc.{self.domain}"

    def summary(self) -> str:
        return (f"# Nodes: pods of the headless Services {WEB}, {WORKER} and {JOBS} in namespace {self.namespace}, "
                f"up to {self.max_pods} each.")

    def sections(self) -> list[str]:
        servers = [f"    nameserver dns{i} {address}" for i, address in enumerate(self.nameservers, start=1)]
        return ["\n".join([
            "# The cluster's DNS (from the pod's resolv.conf): the server-template slots follow the",
            "# headless Services' ready pods; a pod gone from DNS leaves rotation after `hold obsolete`.",
            f"resolvers {RESOLVERS}",
            *(servers or ["    parse-resolv-conf"]),
            "    resolve_retries 3",
            "    timeout resolve 1s",
            "    timeout retry 1s",
            "    hold valid 5s",
            f"    hold obsolete {self.hold_obsolete:g}s",
            "    # Room for many A records in one answer (one per pod).",
            "    accepted_payload_size 8192",
        ]) + "\n"]

    def cookie_lines(self) -> list[str]:
        return [
            "    # Pods have no stable names: the cookie's value is a hash of the pod's address and",
            "    # this key, the same in every balancer replica so that any of them honours it.",
            f"    cookie {COOKIE_NAME} {COOKIE_OPTIONS} dynamic",
            f"    dynamic-cookie-key {APP}",
        ]

    def _template(self, prefix: str, service: str, port: int, options: str = "") -> str:
        # init-addr none: start with empty slots rather than fail when no pod is ready yet.
        return (f"    server-template {prefix} 1-{self.max_pods} {self.fqdn(service)}:{port} resolvers {RESOLVERS}"
                f" init-addr none resolve-prefer ipv4{options}")

    def web_lines(self) -> list[str]:
        return [self._template("web", WEB, self.web_port)]

    def worker_lines(self) -> list[str]:
        return [self._template("worker", WORKER, self.worker_port, " maxconn 1")]

    def probe_lines(self) -> list[str]:
        # Only ready workers are in DNS, and a worker answers probes while it generates.
        return [self._template("probe", WORKER, self.worker_port)]

    def jobs_line(self) -> str:
        # Every ready jobs pod serves: they share the job store.
        return self._template("jobs", JOBS, self.jobs_port)


class ManifestRenderer:
    """The manifests for one cluster spec (limits, listeners, health) and a few deployment choices."""

    def __init__(self, spec: ClusterSpec, namespace: str, image: str, haproxy_image: str, workers: int,
                 webs: int, balancers: int, max_pods: int, model: str, domain: str = "cluster.local",
                 worker_memory: str = "64Gi", web_memory: str = "4Gi", jobs: int = 2) -> None:
        if not spec.public_hosts:
            raise ClusterConfigError("public_hosts: give the name clients use for the site (--public-host NAME); "
                                     "any other Host header is refused")
        if max(workers, webs, jobs) > max_pods:
            raise ClusterConfigError(f"--max-pods {max_pods} is below the replicas asked for")
        if spec.jobs.enabled:
            check_store(spec, jobs)
        # In the pod: listen on every interface, the socket in an emptyDir, the stats password from
        # the environment (HAProxy expands "${VAR}" in double-quoted arguments); the jobs pods are all
        # equal servers found in DNS (no backups).
        self.spec = spec.model_copy(update={
            "public": spec.public.model_copy(update={"host": "0.0.0.0"}),
            "worker_queue": spec.worker_queue.model_copy(update={"host": "0.0.0.0"}),
            "stats": spec.stats.model_copy(update={"password": SecretStr(f'"${{{STATS_PASSWORD_ENV}}}"')}),
            "run_dir": RUN_DIR, "nodes": [], "tls": None,
            "jobs": spec.jobs.model_copy(update={"host": "0.0.0.0", "backups": {}}),
        })
        self.servers = DnsServers(namespace, domain, max_pods, jobs_port=spec.jobs.port)
        self.namespace, self.image, self.haproxy_image = namespace, image, haproxy_image
        self.replicas = {WORKER: workers, WEB: webs, BALANCER: balancers, JOBS: jobs}
        self.model, self.worker_memory, self.web_memory = model, worker_memory, web_memory

    def haproxy_config(self) -> str:
        """haproxy.cfg for the balancer pods."""
        return HAProxyConfigRenderer(self.spec, servers=self.servers, local_hosts=False).render()

    def documents(self) -> list[dict[str, Any]]:
        """Every manifest, in the order ``kubectl apply`` should create them."""
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
            self._config_map(),
            self._worker(), self._headless(WORKER, WORKER_PORT), self._budget(WORKER),
            self._web(), self._headless(WEB, WEB_PORT), self._budget(WEB),
            *self._jobs(),
            self._balancer(), self._budget(BALANCER), *self._balancer_services(),
            *self._network_policies(),
        ]

    def render(self) -> str:
        """The manifests as one multi-document YAML stream."""
        head = "# portrait-ha on Kubernetes: generated by python -m balancer.deploy, do not edit by hand.\n"
        return head + yaml.safe_dump_all(self.documents(), sort_keys=False, width=120)

    # --- pieces ---------------------------------------------------------------------------

    def _meta(self, name: str, component: str | None = None) -> dict[str, Any]:
        labels = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component or name}
        return {"name": name, "namespace": self.namespace, "labels": labels}

    @staticmethod
    def _selector(component: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}

    def _deployment(self, name: str, container: dict[str, Any], volumes: list[dict[str, Any]],
                    grace: int, uid: int) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": self._meta(name),
            "spec": {
                "replicas": self.replicas[name],
                "selector": {"matchLabels": self._selector(name)},
                # One pod at a time, the new one ready before an old one goes.
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": self._selector(name)},
                    "spec": {
                        "terminationGracePeriodSeconds": grace,
                        # The images name their users; Kubernetes needs the number to check it is not root.
                        "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [container], "volumes": volumes,
                    },
                },
            },
        }

    @staticmethod
    def _node_env() -> list[dict[str, Any]]:
        return [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, cluster_secret_env()]

    @staticmethod
    def _probes(port: int, start_timeout: float) -> dict[str, Any]:
        """Readiness /readyz, liveness /healthz, and a start-up allowance (imports) before liveness counts."""
        def get(path: str, period: int, failures: int) -> dict[str, Any]:
            return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "timeoutSeconds": 3,
                    "failureThreshold": failures}
        return {
            "startupProbe": get(HEALTH_PATH, 5, math.ceil(start_timeout / 5)),
            "readinessProbe": get(READY_PATH, 2, 2),
            "livenessProbe": get(HEALTH_PATH, 10, 3),
        }

    @staticmethod
    def _container_security() -> dict[str, Any]:
        return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

    def _worker(self) -> dict[str, Any]:
        container = {
            "name": "worker", "image": self.image,
            "command": ["python", "-m", "webui.worker"],
            "args": ["--host", "0.0.0.0", "--port", str(WORKER_PORT), "--node", "$(POD_NAME)",
                     "--model", self.model, "--device", "cuda"],
            "env": self._node_env(),
            "ports": [{"name": "http", "containerPort": WORKER_PORT}],
            # The GPU is the pod's own; the memory limit makes a runaway worker the only one killed.
            "resources": {
                "requests": {"cpu": "2", "memory": self.worker_memory, "nvidia.com/gpu": 1},
                "limits": {"memory": self.worker_memory, "nvidia.com/gpu": 1},
            },
            **self._probes(WORKER_PORT, self.spec.sidecar.start_timeout),
            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            "securityContext": self._container_security(),
        }
        # The model cache: an emptyDir downloads the model again in each new pod; use a volume
        # (PersistentVolumeClaim) holding it to start faster.
        volumes = [{"name": "cache", "emptyDir": {}}]
        return self._deployment(WORKER, container, volumes, GRACEFUL_SHUTDOWN + 10, IMAGE_UID)

    @property
    def _queue_url(self) -> str:
        return f"http://{self.servers.fqdn(QUEUE_SERVICE)}:{self.spec.worker_queue.port}"

    def _web(self) -> dict[str, Any]:
        container = {
            "name": "web", "image": self.image,
            "command": ["python", "-m", "webui.web"],
            "args": ["--host", "0.0.0.0", "--port", str(WEB_PORT), "--node", "$(POD_NAME)",
                     *self.spec.web_flags(self._queue_url)],
            "env": self._node_env(),
            "ports": [{"name": "http", "containerPort": WEB_PORT}],
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": self.web_memory}},
            **self._probes(WEB_PORT, WEB_START_TIMEOUT),
            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}, {"name": "tmp", "mountPath": "/tmp"}],
            "securityContext": self._container_security(),
        }
        volumes = [{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
        return self._deployment(WEB, container, volumes, 30, IMAGE_UID)

    def _jobs(self) -> list[dict[str, Any]]:
        """The jobs service's Deployment, headless Service and budget (none with ``jobs.enabled`` off)."""
        if not self.spec.jobs.enabled:
            return []
        port = self.spec.jobs.port
        container = {
            "name": "jobs", "image": self.image,
            "command": ["python", "-m", "jobs"],
            "args": jobs_args(self.spec, self._queue_url, self.replicas[WORKER], self.replicas[JOBS]),
            "env": jobs_env(self.spec),
            "ports": [{"name": "http", "containerPort": port}],
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
            **self._probes(port, JOBS_START_TIMEOUT),
            "volumeMounts": jobs_mounts(RUN_DIR),
            "securityContext": {**self._container_security(), "readOnlyRootFilesystem": True},
        }
        return [self._deployment(JOBS, container, jobs_volumes(), 30, IMAGE_UID),
                self._headless(JOBS, port), self._budget(JOBS)]

    def _config_map(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self._meta(BALANCER),
                "data": {"haproxy.cfg": self.haproxy_config()}}

    def _balancer(self) -> dict[str, Any]:
        public, queue = self.spec.public.port, self.spec.worker_queue.port
        # HAProxy answers /healthz itself, once the Host header names the site.
        host = [{"name": "Host", "value": "localhost"}]
        check = {"httpGet": {"path": HEALTH_PATH, "port": public, "httpHeaders": host},
                 "periodSeconds": 2, "failureThreshold": 2}
        container = {
            "name": "haproxy", "image": self.haproxy_image,
            "env": [{"name": STATS_PASSWORD_ENV,
                     "valueFrom": {"secretKeyRef": {"name": STATS_SECRET, "key": "password"}}}, cluster_secret_env()],
            "ports": [{"name": "public", "containerPort": public}, {"name": "queue", "containerPort": queue}],
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "readinessProbe": check,
            "livenessProbe": {**check, "periodSeconds": 10, "failureThreshold": 3},
            "volumeMounts": [{"name": "config", "mountPath": HAPROXY_CONFIG_DIR, "readOnly": True},
                             {"name": "run", "mountPath": str(RUN_DIR)}],
            "securityContext": self._container_security(),
        }
        volumes = [{"name": "config", "configMap": {"name": BALANCER}}, {"name": "run", "emptyDir": {}}]
        return self._deployment(BALANCER, container, volumes, 30, HAPROXY_UID)

    def _headless(self, name: str, port: int) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": self._meta(name),
                "spec": {"clusterIP": "None", "selector": self._selector(name),
                         "ports": [{"name": "http", "port": port, "targetPort": port}]}}

    def _balancer_services(self) -> list[dict[str, Any]]:
        public, queue = self.spec.public.port, self.spec.worker_queue.port
        return [
            {"apiVersion": "v1", "kind": "Service", "metadata": self._meta(PUBLIC_SERVICE, BALANCER),
             # Local: the client's own address reaches HAProxy (per-client limits, X-Forwarded-For).
             "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": self._selector(BALANCER),
                      "ports": [{"name": "http", "port": 80, "targetPort": public}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": self._meta(QUEUE_SERVICE, BALANCER),
             "spec": {"selector": self._selector(BALANCER),
                      "ports": [{"name": "queue", "port": queue, "targetPort": queue}]}},
        ]

    def _budget(self, name: str) -> dict[str, Any]:
        return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": self._meta(name),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": self._selector(name)}}}

    def _pods(self, *components: str) -> list[dict[str, Any]]:
        return [{"podSelector": {"matchLabels": self._selector(component)}} for component in components]

    def _only_from(self, name: str, target: str, source: str, port: int) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": self._meta(name, target),
            "spec": {
                "podSelector": {"matchLabels": self._selector(target)}, "policyTypes": ["Ingress"],
                "ingress": [{"from": self._pods(source), "ports": [{"protocol": "TCP", "port": port}]}],
            },
        }

    def _network_policies(self) -> list[dict[str, Any]]:
        public, queue = self.spec.public.port, self.spec.worker_queue.port
        jobs = [self._only_from(f"{JOBS}-from-balancer", JOBS, BALANCER, self.spec.jobs.port)]
        return [
            self._only_from(f"{WORKER}-from-balancer", WORKER, BALANCER, WORKER_PORT),
            self._only_from(f"{WEB}-from-balancer", WEB, BALANCER, WEB_PORT),
            *(jobs if self.spec.jobs.enabled else []),
            {
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": self._meta(f"{BALANCER}-ingress", BALANCER),
                "spec": {
                    "podSelector": {"matchLabels": self._selector(BALANCER)}, "policyTypes": ["Ingress"],
                    "ingress": [
                        {"ports": [{"protocol": "TCP", "port": public}]},  # the public site: anyone
                        {"from": self._pods(WEB, JOBS),  # the worker queue: web fronts and the jobs service only
                         "ports": [{"protocol": "TCP", "port": queue}]},
                    ],
                },
            },
        ]


def main(argv: list[str] | None = None) -> int:
    """Print the manifests (or ``--haproxy-config``: only haproxy.cfg); exit 2 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="python -m balancer.deploy", description=__doc__.splitlines()[0],
                                     epilog="Example: python -m balancer.deploy --cluster cluster.yaml "
                                     "--public-host studio.example.com --image registry/portrait-ha:1 "
                                     "> portrait-ha.yaml")
    parser.add_argument("--cluster", type=Path, help="Cluster YAML file: limits, health checks, ports, public_hosts "
                        "(its nodes are ignored: pods are found in DNS).")
    parser.add_argument("--public-host", action="append", default=[], help="The site's name (repeatable); "
                        "added to the cluster file's public_hosts.")
    parser.add_argument("--namespace", default=APP, help="Namespace for everything (default: %(default)s).")
    parser.add_argument("--image", default="portrait-ha:latest", help="The image of docker/Dockerfile.")
    parser.add_argument("--haproxy-image", default="haproxy:2.8", help="HAProxy 2.8 LTS image (default: %(default)s).")
    parser.add_argument("--model", default="awportrait-z", help="The workers' --model (default: %(default)s).")
    parser.add_argument("--workers", type=int, default=2, help="Worker pods, one GPU each (default: %(default)s).")
    parser.add_argument("--webs", type=int, default=2, help="Web front pods (default: %(default)s).")
    parser.add_argument("--balancers", type=int, default=2, help="HAProxy pods (default: %(default)s).")
    parser.add_argument("--jobs", type=int, default=2, help="Jobs service pods (default: %(default)s); more than one "
                        "needs a PostgreSQL jobs.store_url.")
    parser.add_argument("--max-pods", type=int, default=16,
                        help="Server slots per kind in HAProxy: the most worker or web pods (default: %(default)s).")
    parser.add_argument("--worker-memory", default="64Gi", help="A worker pod's memory limit (default: %(default)s).")
    parser.add_argument("--cluster-domain", default="cluster.local", help="Kubernetes DNS domain.")
    parser.add_argument("--haproxy-config", action="store_true", help="Print only the balancer's haproxy.cfg.")
    args = parser.parse_args(argv)
    if min(args.workers, args.webs, args.balancers, args.jobs, args.max_pods) < 1:
        parser.error("--workers, --webs, --balancers, --jobs and --max-pods must be at least 1")
    try:
        data = load_cluster_file(args.cluster) if args.cluster else {}
        data["public_hosts"] = [*data.get("public_hosts", []), *args.public_host]
        data.pop("nodes", None)
        renderer = ManifestRenderer(
            parse_cluster(data), namespace=args.namespace, image=args.image, haproxy_image=args.haproxy_image,
            workers=args.workers, webs=args.webs, balancers=args.balancers, max_pods=args.max_pods,
            model=args.model, domain=args.cluster_domain, worker_memory=args.worker_memory, jobs=args.jobs,
        )
        sys.stdout.write(renderer.haproxy_config() if args.haproxy_config else renderer.render())
    except ClusterConfigError as exc:
        print(f"python -m balancer.deploy: {exc}", file=sys.stderr)
        return 2
    return 0
