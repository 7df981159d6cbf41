"""Each part's Deployment: its container (command, resources, probes, mounts), volumes and pod user.

- ``portrait-worker``: one GPU per pod (``nvidia.com/gpu: 1``), a memory limit that makes an out-of-memory kill
  this pod's alone;
- ``portrait-web``: the Gradio web fronts;
- ``portrait-jobs``: the jobs service (``balancer.deploy.jobs_part``: its flags, Secrets and mounts);
- ``portrait-balancer``: HAProxy, its haproxy.cfg from the ConfigMap of the same name, the stats page's password
  from the Secret ``portrait-stats``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from balancer.config.access import STATS_PASSWORD_ENV
from balancer.config.cluster import ClusterSpec
from balancer.deploy.jobs_part import (
    JOBS,
    JOBS_START_TIMEOUT,
    cluster_secret_env,
    jobs_args,
    jobs_env,
    jobs_mounts,
    jobs_volumes,
    secret_env,
)
from balancer.deploy.kube_objects import (
    BALANCER,
    RUN_DIR,
    WEB,
    WEB_PORT,
    WORKER,
    WORKER_PORT,
    container_security,
    deployment,
    probes,
)
from webui.contract import HEALTH_PATH
from webui.settings import WorkerSettings

STATS_SECRET = "portrait-stats"
HAPROXY_CONFIG_DIR = "/usr/local/etc/haproxy"
"""Where the official haproxy image reads haproxy.cfg."""
IMAGE_UID = 10001
"""The "portrait" user of docker/Dockerfile."""
HAPROXY_UID = 99
"""The "haproxy" user of the official haproxy image."""
WEB_START_TIMEOUT = 300.0
"""Seconds a web front pod may take to serve (imports, Gradio) before its liveness probe counts."""
GRACEFUL_SHUTDOWN = WorkerSettings.model_fields["graceful_shutdown"].default


def _node_env() -> list[dict[str, Any]]:
    return [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, cluster_secret_env()]


@dataclass(frozen=True)
class PartDeployments:
    """The parts' Deployments for the pods' cluster spec and the deployment's choices (images, replicas, memory)."""

    spec: ClusterSpec
    namespace: str
    image: str
    haproxy_image: str
    replicas: dict[str, int]
    """Pods per part, by its name."""
    model: str
    worker_memory: str
    web_memory: str
    queue_url: str
    """The worker queue Service, as web fronts and jobs pods reach it."""

    def _deployment(self, name: str, container: dict[str, Any], volumes: list[dict[str, Any]],
                    grace: int, uid: int) -> dict[str, Any]:
        return deployment(self.namespace, name, self.replicas[name], container, volumes, grace, uid)

    def worker(self) -> dict[str, Any]:
        container = {
            "name": "worker", "image": self.image,
            "command": ["python", "-m", "webui.worker"],
            "args": ["--host", "0.0.0.0", "--port", str(WORKER_PORT), "--node", "$(POD_NAME)",
                     "--model", self.model, "--device", "cuda",
                     # It records the REST generations HAProxy marks, at the jobs service behind the worker queue.
                     *(["--jobs-url", self.queue_url] if self.spec.workers_record_jobs else [])],
            "env": _node_env(),
            "ports": [{"name": "http", "containerPort": WORKER_PORT}],
            # The GPU is the pod's own; the memory limit makes a runaway worker the only one killed.
            "resources": {
                "requests": {"cpu": "2", "memory": self.worker_memory, "nvidia.com/gpu": 1},
                "limits": {"memory": self.worker_memory, "nvidia.com/gpu": 1},
            },
            **probes(WORKER_PORT, self.spec.sidecar.start_timeout),
            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            "securityContext": container_security(),
        }
        # The model cache: an emptyDir downloads the model again in each new pod; use a volume
        # (PersistentVolumeClaim) holding it to start faster.
        volumes = [{"name": "cache", "emptyDir": {}}]
        return self._deployment(WORKER, container, volumes, GRACEFUL_SHUTDOWN + 10, IMAGE_UID)

    def web(self) -> dict[str, Any]:
        container = {
            "name": "web", "image": self.image,
            "command": ["python", "-m", "webui.web"],
            "args": ["--host", "0.0.0.0", "--port", str(WEB_PORT), "--node", "$(POD_NAME)",
                     *self.spec.web_flags(self.queue_url)],
            "env": _node_env(),
            "ports": [{"name": "http", "containerPort": WEB_PORT}],
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": self.web_memory}},
            **probes(WEB_PORT, WEB_START_TIMEOUT),
            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}, {"name": "tmp", "mountPath": "/tmp"}],
            "securityContext": container_security(),
        }
        volumes = [{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
        return self._deployment(WEB, container, volumes, 30, IMAGE_UID)

    def jobs(self) -> dict[str, Any]:
        port = self.spec.jobs.port
        container = {
            "name": "jobs", "image": self.image,
            "command": ["python", "-m", "jobs"],
            "args": jobs_args(self.spec, self.queue_url, self.replicas[WORKER], self.replicas[JOBS]),
            "env": jobs_env(self.spec),
            "ports": [{"name": "http", "containerPort": port}],
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
            **probes(port, JOBS_START_TIMEOUT),
            "volumeMounts": jobs_mounts(RUN_DIR),
            "securityContext": {**container_security(), "readOnlyRootFilesystem": True},
        }
        return self._deployment(JOBS, container, jobs_volumes(), 30, IMAGE_UID)

    def balancer(self) -> dict[str, Any]:
        public, queue = self.spec.public.port, self.spec.worker_queue.port
        # HAProxy answers /healthz itself, once the Host header names the site.
        host = [{"name": "Host", "value": "localhost"}]
        check = {"httpGet": {"path": HEALTH_PATH, "port": public, "httpHeaders": host},
                 "periodSeconds": 2, "failureThreshold": 2}
        container = {
            "name": "haproxy", "image": self.haproxy_image,
            "env": [secret_env(STATS_PASSWORD_ENV, STATS_SECRET, "password"), cluster_secret_env()],
            "ports": [{"name": "public", "containerPort": public}, {"name": "queue", "containerPort": queue}],
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "readinessProbe": check,
            "livenessProbe": {**check, "periodSeconds": 10, "failureThreshold": 3},
            "volumeMounts": [{"name": "config", "mountPath": HAPROXY_CONFIG_DIR, "readOnly": True},
                             {"name": "run", "mountPath": str(RUN_DIR)}],
            "securityContext": container_security(),
        }
        volumes = [{"name": "config", "configMap": {"name": BALANCER}}, {"name": "run", "emptyDir": {}}]
        return self._deployment(BALANCER, container, volumes, 30, HAPROXY_UID)
