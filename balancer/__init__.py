"""The portrait-ha cluster: HAProxy in front of the nodes, and the sidecar that keeps them alive.

- ``cluster``: the cluster description (``ClusterSpec``), loaded from YAML or built by ``launch.py``.
- ``haproxy_config``: renders a commented ``haproxy.cfg`` from a ``ClusterSpec``.
- ``haproxy``: finds, validates and runs HAProxy.
- ``runtime_api``: HAProxy's runtime API, blocking (``RuntimeAPI``) and asyncio (``AsyncRuntimeAPI``).
- ``causes``: why a supervised process died (kernel OOM killer, OOM exit code, crash).
- ``restart_policy``: when to restart a process and when to give up (crash loop).
- ``supervisor``: keeps one process running under that policy (``ProcessSupervisor``).
- ``children``: what is supervised: node parts (``NodeProcess``) and HAProxy (``HAProxyChild``).
- ``gate``: tells HAProxy each server's state, and again after HAProxy restarted.
- ``sidecar``: supervises HAProxy and the node processes on this host on one event loop.
- ``status``: the sidecar's ``/status`` (JSON) and ``/metrics`` (Prometheus) endpoints.
"""
