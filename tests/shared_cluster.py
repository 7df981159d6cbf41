"""The one cluster that read-only tests share (``shared_cluster`` in ``tests/conftest.py``), and what it is.

Two stand-in nodes (``--model standin:SECONDS``: the subject of these tests is the edge, the web
fronts and the clients, not the pixels) behind HAProxy, started by ``launch.py`` the first time a
test asks for it and stopped at the end of the session. A test that uses it changes nothing another
could see: it kills, drains and restarts nothing, changes no setting, and leaves no job running
(``tests/test_hostile_clients.py``'s ``still_serving`` checks the last after each of its tests).
A test that needs other settings, or to break something, starts a module-scoped cluster of its own.

Its settings are those the sharing modules need, named here so that they can say what they rely on:
short deadlines for slow clients, a short listen grace, and a slow prompt marker for long jobs.
"""

from __future__ import annotations

from bench.harness.cluster_options import ClusterOptions
from tests.suite_cluster import suite_options
from webui.contract import FAULT_PROMPT_MARKER, FAULT_STEP_CPU_SECONDS

MODULES = ("tests/test_docs.py", "tests/test_edge_gradio.py", "tests/test_hostile_clients.py")
"""The modules that use it: one test process runs them one after the other (``tests/conftest.py``), so the
cluster starts once and stops after its last user."""
STANDIN_SECONDS = 0.05
"""Every job's fixed time on the stand-in workers."""
LISTEN_GRACE = 1.0
"""Seconds a web front lets a running job go without an open event stream (``--listen-grace``)."""
BODY_DEADLINE = 3.0
"""HAProxy's ``request_timeout`` and ``body_timeout``: a slow client's request is cut off after this."""
QUEUE_TIMEOUT = 60
"""Seconds a job may wait in HAProxy's queue for a worker."""
SLOW_MARKER = "[[slow]]"
"""A prompt that contains this is a slow job: each step computes ``STEP_CPU_SECONDS`` of CPU time."""
STEP_CPU_SECONDS = 0.06
"""CPU seconds each step of a slow job takes at least (so a job of N steps lasts at least N times this)."""


def shared_options() -> ClusterOptions:
    """The shared cluster's options."""
    return suite_options(
        model=f"standin:{STANDIN_SECONDS:g}", nodes=2, threads=1, start_timeout=120,
        web_args=["--listen-grace", f"{LISTEN_GRACE:g}"],
        worker_env={FAULT_STEP_CPU_SECONDS: str(STEP_CPU_SECONDS), FAULT_PROMPT_MARKER: SLOW_MARKER},
        extra={"limits": {"request_timeout": BODY_DEADLINE, "body_timeout": BODY_DEADLINE,
                          "queue_timeout": QUEUE_TIMEOUT}},
    )
