"""The portrait-ha cluster: HAProxy in front of the nodes, and the sidecar that keeps them alive.

- ``cluster``: the cluster description (``ClusterSpec``), loaded from YAML or built by ``launch.py``.
- ``haproxy_config``: renders a commented ``haproxy.cfg`` from a ``ClusterSpec``.
- ``haproxy``: finds, validates, runs and talks to HAProxy (runtime API).
- ``causes``: why a supervised process died (kernel OOM killer, OOM exit code, crash).
- ``restart_policy``: when to restart a process and when to give up (crash loop).
- ``sidecar``: supervises the node processes on this host and keeps HAProxy in step.
- ``status``: the sidecar's ``/status`` (JSON) and ``/metrics`` (Prometheus) endpoints.
"""
