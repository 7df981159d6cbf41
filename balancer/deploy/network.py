"""Who reaches which part: the balancer's Services (the public site, the worker queue) and the NetworkPolicies.

Workers, web fronts and the jobs service accept connections only from the balancer pods (the in-cluster form of
"nodes accept only their balancers"); the worker queue only from web fronts and the jobs service.
"""

from __future__ import annotations

from typing import Any

from balancer.config.cluster import ClusterSpec
from balancer.deploy.jobs_part import JOBS
from balancer.deploy.kube_objects import (
    BALANCER,
    PUBLIC_SERVICE,
    QUEUE_SERVICE,
    WEB,
    WEB_PORT,
    WORKER,
    WORKER_PORT,
    meta,
    selector,
)


def balancer_services(namespace: str, spec: ClusterSpec) -> list[dict[str, Any]]:
    """``portrait`` (public, a LoadBalancer keeping client addresses) and ``portrait-queue`` (the worker queue)."""
    public, queue = spec.public.port, spec.worker_queue.port
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(namespace, PUBLIC_SERVICE, BALANCER),
         # Local: the client's own address reaches HAProxy (per-client limits, X-Forwarded-For).
         "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": selector(BALANCER),
                  "ports": [{"name": "http", "port": 80, "targetPort": public}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(namespace, QUEUE_SERVICE, BALANCER),
         "spec": {"selector": selector(BALANCER),
                  "ports": [{"name": "queue", "port": queue, "targetPort": queue}]}},
    ]


def _pods(*components: str) -> list[dict[str, Any]]:
    return [{"podSelector": {"matchLabels": selector(component)}} for component in components]


def _only_from(namespace: str, name: str, target: str, source: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta(namespace, name, target),
        "spec": {
            "podSelector": {"matchLabels": selector(target)}, "policyTypes": ["Ingress"],
            "ingress": [{"from": _pods(source), "ports": [{"protocol": "TCP", "port": port}]}],
        },
    }


def network_policies(namespace: str, spec: ClusterSpec) -> list[dict[str, Any]]:
    """Each part's ingress: the nodes and the jobs service from the balancer only; the balancer's as above."""
    public, queue = spec.public.port, spec.worker_queue.port
    jobs = [_only_from(namespace, f"{JOBS}-from-balancer", JOBS, BALANCER, spec.jobs.port)]
    return [
        _only_from(namespace, f"{WORKER}-from-balancer", WORKER, BALANCER, WORKER_PORT),
        _only_from(namespace, f"{WEB}-from-balancer", WEB, BALANCER, WEB_PORT),
        *(jobs if spec.jobs.enabled else []),
        {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(namespace, f"{BALANCER}-ingress", BALANCER),
            "spec": {
                "podSelector": {"matchLabels": selector(BALANCER)}, "policyTypes": ["Ingress"],
                "ingress": [
                    {"ports": [{"protocol": "TCP", "port": public}]},  # the public site: anyone
                    {"from": _pods(WEB, JOBS),  # the worker queue: web fronts and the jobs service only
                     "ports": [{"protocol": "TCP", "port": queue}]},
                ],
            },
        },
    ]
