"""A job whose worker is SIGKILLed mid-generation finishes on another worker, unseen by the client.

Two nodes (their workers serving the fixed-latency stand-in, not a model: the subject is the web front's
retry, and the stand-in draws by seed as the model does) behind a real HAProxy running the production
configuration (``balancer.haproxy.config``: the ``worker_queue`` frontend and ``workers`` backend with health
checks on ``/readyz`` and ``option redispatch``), started by ``launch.py`` (``LaunchedCluster``), and a real
``gradio_client`` on the public port. The test kills whichever worker reports ``busy`` while the job runs.
HAProxy cannot replay a stream that has started, so the web front's ``WorkerClient`` retries
with the same seed: the result must be exactly the image the surviving worker draws for it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.processes import Processes
from tests.suite_cluster import suite_options

JOB = dict(prompt="failover portrait", width=384, height=384, steps=12, seed=4242)
MODEL = "standin:2"
"""Two seconds a job: long enough to kill its worker in the middle."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LaunchedCluster]:
    """Two stand-in nodes; the web fronts retry a lost job after 0.5 s (the sidecar restarts a killed
    worker, and HAProxy holds it in maint until then: the retry finds the other one)."""
    options = suite_options(model=MODEL, nodes=2, start_timeout=120, web_args=["--retry-delay", "0.5"])
    with Processes("failover") as processes, LaunchedCluster(options, name="failover", processes=processes,
                                                             run_dir=tmp_path) as launched:
        yield launched


def test_job_survives_its_worker_being_killed(cluster: LaunchedCluster, tmp_path: Path) -> None:
    client = Client(cluster.public_url, verbose=False, download_files=str(tmp_path))

    job = client.submit(**JOB, api_name="/generate")
    busy = cluster.busy_workers(timeout=60)
    assert busy, "no worker became busy"
    victim = busy[0]
    cluster.kill(victim, "worker")
    gallery, info = job.result(timeout=300)

    survivor = next(node for node in cluster.node_names if node != victim)
    assert info["attempts"] >= 2
    assert info["worker_id"] == cluster.part_ids("worker")[survivor]
    assert info["seed"] == JOB["seed"]
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (JOB["width"], JOB["height"])
        received = np.asarray(image.convert("RGB"))

    # The retry kept the seed: the survivor draws the very same image when asked directly.
    direct = httpx.post(f"{cluster.part_url(survivor, 'worker')}/generate", json=JOB, timeout=300,
                        headers=cluster.internal_headers)
    direct.raise_for_status()
    with Image.open(io.BytesIO(base64.b64decode(direct.json()["images"][0]))) as image:
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), received)
