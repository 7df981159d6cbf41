"""The sidecar's ``GET /status`` document (``status_document``), served by ``balancer.api.routes``.

``/status`` looks like::

    {"nodes": {"node1": {"worker": {"state": "ready", "admin": "ready", "pid": 4242, "restarts": 1,
                                    "last_cause": "oom_exit", "uptime": 12.5, ...,
                                    "server": {"status": "UP", "sessions": 1, "queued": 0}},
                         "web": {...}}},
     "crash_looped": [], "parts": 4, "ready": 4, "queued": {"workers": 3, "webs": 0},
     "haproxy": {"state": "ready", "pid": 4200, "restarts": 0, ...}}

``admin`` is ``drain`` while an operator has drained the node (``POST /drain/NODE``, until
``POST /ready/NODE``). ``server`` (each part's server as HAProxy sees it: status, requests in
flight, requests queued for it) and ``queued`` (requests waiting in each backend's queue) are there
when HAProxy answered the sidecar quickly.

``parts`` and ``ready`` count node parts. ``haproxy`` is there when the sidecar supervises
HAProxy (under ``launch.py``); in metrics, ``crash_looped`` and ``POST /retry`` it is the part
``haproxy`` of the pseudo-node ``balancer``; so are ``jobs`` (the jobs service, on a balancer host) and
``keepalived`` (on a balancer sharing a floating address), each with an entry like ``haproxy``'s. A worker
given a GPU has ``"gpu": "1"`` (its ``CUDA_VISIBLE_DEVICES``). On a machine with NVIDIA GPUs, ``gpus`` has
what NVML reports about each (``balancer.config.gpus.gpu_facts``) and the workers on it::

     "gpus": {"1": {"name": "NVIDIA L4", "uuid": "GPU-...", "memory_used_bytes": 9123456789,
                    "memory_total_bytes": 24152899584, "utilization_percent": 97,
                    "temperature_celsius": 61, "workers": ["node2"]}}

and ``/metrics`` the gauges ``portrait_gpu_memory_used_bytes``, ``portrait_gpu_memory_total_bytes``,
``portrait_gpu_utilization_percent`` and ``portrait_gpu_temperature_celsius`` (label ``gpu``).
Without GPUs there is neither the key nor a single GPU series (absent, never 0).

On a balancer sharing a floating address (keepalived), ``floating`` says whether this balancer holds it,
as keepalived's notify script last said (``state`` null while keepalived runs no instance or has said
nothing yet)::

     "floating": {"address": "10.0.0.5", "state": "MASTER"}

and ``/metrics`` has the gauge ``portrait_sidecar_vrrp_state`` (label ``state``: 1 for the current one,
0 for the others; all 0 while it is unknown).
"""

from __future__ import annotations

from balancer.api.haproxy_view import HAProxyView
from balancer.api.metrics import FloatingView, GpuFacts
from balancer.supervision.state import PartState, PartStatus


def status_document(
    statuses: list[PartStatus],
    now: float,
    haproxy: PartStatus | None = None,
    gpus: GpuFacts | None = None,
    view: HAProxyView | None = None,
    floating: FloatingView | None = None,
    companions: list[PartStatus] | None = None,
) -> dict:
    """The ``/status`` JSON for these node parts (and HAProxy, when supervised; GPUs, when there are;
    HAProxy's view of the servers and queues, when it answered; the floating address, when shared; the
    balancer's ``companions``, each under its part's name)."""
    nodes: dict[str, dict] = {}
    for status in statuses:
        snapshot = nodes.setdefault(status.node, {})[status.part] = status.snapshot(now)
        server = view.servers.get((status.backend, status.node)) if view and status.backend else None
        if server is not None:
            snapshot["server"] = {"status": server.status, "sessions": server.current_sessions,
                                  "queued": server.queued}
    everything = [*([haproxy] if haproxy is not None else []), *(companions or []), *statuses]
    document = {
        "nodes": nodes,
        "parts": len(statuses),
        "ready": sum(status.state is PartState.READY for status in statuses),
        "crash_looped": [f"{status.node}/{status.part}" for status in everything if status.crash_looped],
    }
    backends = {status.backend for status in statuses if status.backend}
    if view is not None:
        document["queued"] = {backend: count for backend, count in view.queued.items() if backend in backends}
    if haproxy is not None:
        document["haproxy"] = haproxy.snapshot(now)
    for companion in companions or []:
        document[companion.part] = companion.snapshot(now)
    if floating is not None:
        document["floating"] = floating.document()
    if gpus:
        document["gpus"] = {
            gpu: {**facts, "workers": [status.node for status in statuses if status.gpu == gpu]}
            for gpu, facts in gpus.items()
        }
    return document
