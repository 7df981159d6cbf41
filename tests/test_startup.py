"""Opening the studio while the cluster starts: a readable page that becomes the studio by itself.

HAProxy answers while no web front is up (it knows: ``nbsrv``) with a short HTML page that
reloads itself; once a web front serves the page it stays served, whatever the workers do
(a web front's readiness is its own), and the page itself says when no worker is ready yet.
The node's worker serves the fixed-latency stand-in: the subject is the page, not the model.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from bench.harness.cluster_status import sidecar_part
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.processes import Processes
from tests.suite_cluster import suite_options

SAMPLE_EVERY = 0.1
"""Seconds between two page loads."""


def sample_page(cluster: LaunchedCluster, until: float) -> list[tuple[float, int | None, str]]:
    """(time, status or None when refused, body) of the page, as a browser asks for it, until the
    studio page was served and the worker is ready and ten more loads went by (bounded by ``until``)."""
    samples: list[tuple[float, int | None, str]] = []
    worker_ready_at: float | None = None
    with httpx.Client(base_url=cluster.public_url, headers={"Accept": "text/html"}, timeout=10) as browser:
        while time.monotonic() < until:
            try:
                page = browser.get("/")
                samples.append((time.monotonic(), page.status_code, page.text))
            except httpx.TransportError:
                samples.append((time.monotonic(), None, ""))
            if worker_ready_at is None:
                try:
                    if sidecar_part(cluster.status(), "node1", "worker")["state"] == "ready":
                        worker_ready_at = time.monotonic()
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
            elif len([s for s in samples if s[0] > worker_ready_at and s[1] == 200]) >= 10:
                return samples
            time.sleep(SAMPLE_EVERY)
    raise TimeoutError(f"no studio page with a ready worker in time; {len(samples)} page loads")


def test_a_browser_during_start_up_sees_a_page_that_turns_into_the_studio(tmp_path: Path) -> None:
    with Processes("startup") as processes:
        cluster = LaunchedCluster(suite_options(model="standin:0.1", nodes=1, threads=1), name="startup",
                                  processes=processes, run_dir=tmp_path)
        cluster.launch()
        samples = sample_page(cluster, until=time.monotonic() + 240)
    statuses = [status for _, status, _ in samples]
    first_studio = statuses.index(200)
    before, after = samples[:first_studio], samples[first_studio:]
    assert any(status == 503 for _, status, _ in before), "no load happened before the studio was up"
    for _, status, body in before:
        assert status in (None, 503), status  # None: HAProxy not listening yet, in the first instants
        if status == 503:
            assert "<h1>Starting up</h1>" in body and 'http-equiv="refresh"' in body
    assert {status for _, status, _ in after} == {200}, "the page flapped once served: " + str(statuses)
    assert "Portrait Studio" in after[0][2]
    print(f"page loads: {len(before)} before the studio, {len(after)} after (all 200)")
