"""Cluster settings the suite's clusters share where their subject is not what those settings tune.

``DISPATCH_AGENT_INTERVAL``: HAProxy polls each worker's dispatch agent every 10 ms by default (the next job
comes while a result is encoded: ``docs/architecture.md``), some 80 new connections a second per worker. Two
idle two-node stand-in clusters side by side spent 4.1 s of CPU in 30 s at 10 ms and 2.3 s at 50 ms, most of the
difference in the workers and HAProxy (``python -m bench.idle_cluster``, ``bench/results/idle-cluster.md``);
the suite keeps two or three clusters up at a time on two cores. At 50 ms a result waits at
most 50 ms longer for HAProxy's next poll. Tests of dispatch itself (``tests/test_dispatch.py``,
``tests/test_host_agent.py``, ``tests/test_hosts.py``: a second job while a result is encoded) and the benchmarks
keep the default.
"""

from __future__ import annotations

from typing import Any

from bench.harness.cluster_options import ClusterOptions

DISPATCH_AGENT_INTERVAL = 0.05
"""Seconds between HAProxy's polls of each dispatch agent in the suite's clusters."""


def suite_options(**options: Any) -> ClusterOptions:
    """``ClusterOptions`` with the suite's dispatch agent interval."""
    return ClusterOptions(dispatch_agent_interval=DISPATCH_AGENT_INTERVAL, **options)


def suite_health(health: dict[str, Any]) -> dict[str, Any]:
    """A ``health`` section with the suite's dispatch agent interval (node hosts' host agents poll at it too)."""
    return {**health, "dispatch_agent_interval": DISPATCH_AGENT_INTERVAL}
