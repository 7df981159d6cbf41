"""Kubernetes manifests for portrait-ha, from the same cluster file: every part's objects, in apply order.

The same processes as on a few boxes, with Kubernetes in the sidecar's place (it restarts a dead
or out-of-memory pod; resource limits make an OOM kill one pod, never a neighbour):

- ``portrait-worker``: a Deployment, one GPU per pod (``nvidia.com/gpu: 1``), readiness
  ``/readyz`` (model loaded and warm), liveness ``/healthz``; a headless Service lists its ready pods.
- ``portrait-web``: the Gradio web fronts, a Deployment and a headless Service.
- ``portrait-jobs``: the jobs service (``/v1/jobs``), a Deployment and a headless Service that HAProxy's
  ``jobs`` backend finds its pods in (``balancer.deploy.jobs_part``: its Secrets, the shared store).
- ``portrait-balancer``: HAProxy 2.8 with the ``haproxy.cfg`` that ``balancer.haproxy.config``
  renders for the cluster file (limits, health checks, stickiness, security rules), its servers
  found in DNS (``balancer.deploy.dns_servers``: ``server-template`` + ``resolvers`` on the headless
  Services) instead of listed. Services: ``portrait`` (public, a LoadBalancer keeping client addresses
  for the per-client limits) and ``portrait-queue`` (the worker queue, for the web fronts).
- a PodDisruptionBudget per Deployment, and NetworkPolicies (``balancer.deploy.network``): workers, web
  fronts and the jobs service accept connections only from the balancer pods, the worker queue only from
  web fronts and the jobs service.

No secret is in the manifests: HAProxy reads the stats page's password from the environment,
which takes it from the Secret ``portrait-stats`` (key ``password``) that the operator creates;
every part takes the cluster secret from ``portrait-cluster`` the same way.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import SecretStr

from balancer.config.access import STATS_PASSWORD_ENV
from balancer.config.basics import ClusterConfigError
from balancer.config.cluster import ClusterSpec
from balancer.deploy.dns_servers import DnsServers
from balancer.deploy.jobs_part import JOBS, check_store
from balancer.deploy.kube_objects import (
    BALANCER,
    QUEUE_SERVICE,
    RUN_DIR,
    WEB,
    WEB_PORT,
    WORKER,
    WORKER_PORT,
    disruption_budget,
    headless_service,
    meta,
)
from balancer.deploy.network import balancer_services, network_policies
from balancer.deploy.part_deployments import PartDeployments
from balancer.haproxy.config import HAProxyConfigRenderer


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
        self.namespace = namespace
        self.deployments = PartDeployments(
            self.spec, namespace, image, haproxy_image,
            replicas={WORKER: workers, WEB: webs, BALANCER: balancers, JOBS: jobs}, model=model,
            worker_memory=worker_memory, web_memory=web_memory,
            queue_url=f"http://{self.servers.fqdn(QUEUE_SERVICE)}:{self.spec.worker_queue.port}",
        )

    def haproxy_config(self) -> str:
        """haproxy.cfg for the balancer pods."""
        return HAProxyConfigRenderer(self.spec, servers=self.servers, local_hosts=False).render()

    def documents(self) -> list[dict[str, Any]]:
        """Every manifest, in the order ``kubectl apply`` should create them."""
        namespace, parts = self.namespace, self.deployments
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            self._config_map(),
            parts.worker(), headless_service(namespace, WORKER, WORKER_PORT), disruption_budget(namespace, WORKER),
            parts.web(), headless_service(namespace, WEB, WEB_PORT), disruption_budget(namespace, WEB),
            *self._jobs(),
            parts.balancer(), disruption_budget(namespace, BALANCER), *balancer_services(namespace, self.spec),
            *network_policies(namespace, self.spec),
        ]

    def render(self) -> str:
        """The manifests as one multi-document YAML stream."""
        head = "# portrait-ha on Kubernetes: generated by python -m balancer.deploy, do not edit by hand.\n"
        return head + yaml.safe_dump_all(self.documents(), sort_keys=False, width=120)

    def _config_map(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(self.namespace, BALANCER),
                "data": {"haproxy.cfg": self.haproxy_config()}}

    def _jobs(self) -> list[dict[str, Any]]:
        """The jobs service's Deployment, headless Service and budget (none with ``jobs.enabled`` off)."""
        if not self.spec.jobs.enabled:
            return []
        return [self.deployments.jobs(), headless_service(self.namespace, JOBS, self.spec.jobs.port),
                disruption_budget(self.namespace, JOBS)]
