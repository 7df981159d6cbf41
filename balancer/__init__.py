"""The portrait-ha cluster: HAProxy in front of the nodes, and the sidecar that keeps them alive.

Rooms, lowest first; each imports only rooms above it in this list (``tests/test_layering.py``):

- ``config``: the cluster description (``ClusterSpec``: ``cluster``, ``cluster_fields``, ``nodes``, the sections
  ``basics``, ``access``, ``limits``, ``health``, ``jobs_service``), reading it (``loading``), this machine
  (``host``), launch settings (``settings``), GPU assignment (``gpus``).
- ``system``: the private run directory (``run_dir``), children that die with their parent (``lifetime``).
- ``haproxy``: haproxy.cfg (``config``), the HAProxy process (``process``), its runtime API
  (``runtime_api``), the gate that tells it server states (``gate``), the agent-check line (``agent``),
  keepalived's liveness check (``alive``).
- ``supervision``: one process kept running (``supervisor``, ``restart_policy.restart_loop``, each run
  probed by ``watcher``), what is supervised (``child``, ``children``), its record (``state``), why it died
  (``causes``), hangs (``hang``), warm standbys (``standby``).
- ``multihost``: the node host's agent (``host_agent``), keepalived (``keepalived``,
  ``keepalived_notify``), certificates (``certs``), the parts' mutual TLS (``part_tls``).
- ``operations``: each process's supervisor built (``parts``), the managed nodes (``nodes``), rolling
  restart (``rolling``), adding and removing nodes (``node_changes``), request counts (``traffic``), the
  operator's operations started (``actions``).
- ``api``: the sidecar's HTTP routes (``routes``), its metrics (``metrics``), basic auth (``basic_auth``).
- ``deploy``: Kubernetes manifests (``python -m balancer.deploy``); ``cli``: ``python -m balancer.cli``.
- ``sidecar``: the composition root (``python -m balancer.sidecar``).
"""
