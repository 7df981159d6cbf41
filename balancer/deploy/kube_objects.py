"""portrait-ha's parts as Kubernetes objects: their names and labels, and the shapes every part shares.

A part's Deployment (one pod at a time replaced, non-root, seccomp), its probes, its headless Service and its
PodDisruptionBudget; the jobs service's name and Secrets are in ``balancer.deploy.jobs_part``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from balancer.config.jobs_service import JobsSpec
from webui.contract import HEALTH_PATH, READY_PATH
from webui.settings import WebSettings, WorkerSettings

APP = "portrait-ha"
WORKER, WEB, BALANCER = "portrait-worker", "portrait-web", "portrait-balancer"
PUBLIC_SERVICE, QUEUE_SERVICE = "portrait", "portrait-queue"
RUN_DIR = Path("/run/portrait-ha")
"""HAProxy's runtime socket directory in its pod (an emptyDir)."""
WORKER_PORT = WorkerSettings.model_fields["port"].default
WEB_PORT = WebSettings.model_fields["port"].default
JOBS_PORT = JobsSpec.model_fields["port"].default


def meta(namespace: str, name: str, component: str | None = None) -> dict[str, Any]:
    """An object's metadata: its name in the namespace, labelled with the part (``component``) it belongs to."""
    labels = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component or name}
    return {"name": name, "namespace": namespace, "labels": labels}


def selector(component: str) -> dict[str, str]:
    """The labels that pick one part's pods."""
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def deployment(namespace: str, name: str, replicas: int, container: dict[str, Any], volumes: list[dict[str, Any]],
               grace: int, uid: int) -> dict[str, Any]:
    """A part's Deployment: one container, run as ``uid`` (never root), replaced one pod at a time."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(namespace, name),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(name)},
            # One pod at a time, the new one ready before an old one goes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": selector(name)},
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


def probes(port: int, start_timeout: float) -> dict[str, Any]:
    """Readiness /readyz, liveness /healthz, and a start-up allowance (imports) before liveness counts."""
    def get(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "timeoutSeconds": 3,
                "failureThreshold": failures}
    return {
        "startupProbe": get(HEALTH_PATH, 5, math.ceil(start_timeout / 5)),
        "readinessProbe": get(READY_PATH, 2, 2),
        "livenessProbe": get(HEALTH_PATH, 10, 3),
    }


def container_security() -> dict[str, Any]:
    """No privilege escalation, no capabilities."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def headless_service(namespace: str, name: str, port: int) -> dict[str, Any]:
    """A Service whose DNS name lists the part's ready pods (HAProxy's ``server-template`` slots)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(namespace, name),
            "spec": {"clusterIP": "None", "selector": selector(name),
                     "ports": [{"name": "http", "port": port, "targetPort": port}]}}


def disruption_budget(namespace: str, name: str) -> dict[str, Any]:
    """At most one of the part's pods evicted at a time."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(namespace, name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}}}
