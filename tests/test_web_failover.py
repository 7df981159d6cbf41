"""A job whose worker is SIGKILLed mid-generation finishes on another worker, unseen by the client.

Two real workers (serving the fixed-latency stand-in, not a model: the subject is the web front's
retry, and the stand-in draws by seed as the model does) behind a real HAProxy running the production configuration
(``balancer.haproxy.config``: the ``worker_queue`` frontend and ``workers`` backend with health
checks on ``/readyz`` and ``option redispatch``), one web front sending its jobs there, and a
real ``gradio_client``. The test kills whichever worker reports ``busy`` while the job runs.
HAProxy cannot replay a stream that has started, so the web front's ``WorkerClient`` retries
with the same seed: the result must be exactly the image the surviving worker draws for it.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from balancer.config.loading import parse_cluster
from balancer.haproxy.config import WORKERS_BACKEND, render_config
from balancer.haproxy.process import HAProxyProcess, RuntimeAPI, write_config
from bench.harness.processes import Processes, free_port, kill_tree
from bench.harness.waiting import wait_http, wait_until
from tests.balancer_helpers import cluster_data

WORKER_IDS = ("failover-a", "failover-b")
JOB = dict(prompt="failover portrait", width=384, height=384, steps=12, seed=4242)
MODEL = "standin:2"
"""Two seconds a job: long enough to kill its worker in the middle."""


@pytest.fixture
def cluster(processes: Processes, tmp_path: Path):
    """Two workers behind HAProxy and a web front using it; yields (front URL, {id: (url, proc)})."""
    spec = parse_cluster(cluster_data(tmp_path, [], list(WORKER_IDS)))
    workers = {}
    for node in spec.workers:
        proc = processes.start(
            ["python", "-m", "webui.worker", "--port", str(node.worker.port), "--node", node.name, "--model", MODEL],
            log_name=node.name,
        )
        workers[node.name] = (node.worker.url, proc)
    web_port = free_port()
    front = processes.start(
        ["python", "-m", "webui.web", "--port", str(web_port), "--worker-queue", spec.worker_queue.url,
         "--node", "failover-front", "--retry-delay", "0.5"],
        log_name="failover-front",
    )
    haproxy = HAProxyProcess(write_config(render_config(spec), spec.config_path), spec.socket_path,
                             tmp_path / "haproxy.log")
    haproxy.start()
    try:
        for url, proc in workers.values():
            wait_http(f"{url}/readyz", proc=proc, timeout=180)
        api = RuntimeAPI(spec.socket_path)
        wait_until(lambda: all(server.is_up for server in api.servers(WORKERS_BACKEND)), "both workers UP", 30)
        web_url = f"http://127.0.0.1:{web_port}"
        wait_http(f"{web_url}/readyz", proc=front, timeout=120)
        yield web_url, workers
    finally:
        haproxy.stop()


def busy_worker(workers: dict, timeout: float = 60.0) -> str:
    """The id of the worker whose ``/readyz`` reports a running job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker_id, (url, _) in workers.items():
            try:
                if httpx.get(f"{url}/readyz", timeout=2).json().get("busy"):
                    return worker_id
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    raise TimeoutError("no worker became busy")


def test_job_survives_its_worker_being_killed(cluster, tmp_path: Path) -> None:
    web_url, workers = cluster
    client = Client(web_url, verbose=False, download_files=str(tmp_path))

    job = client.submit(**JOB, api_name="/generate")
    victim = busy_worker(workers)
    _, victim_proc = workers[victim]
    kill_tree(victim_proc.pid)
    victim_proc.wait(timeout=10)
    gallery, info = job.result(timeout=300)

    survivor = next(worker_id for worker_id in WORKER_IDS if worker_id != victim)
    assert info["attempts"] >= 2
    assert info["worker_id"] == survivor
    assert info["seed"] == JOB["seed"]
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (JOB["width"], JOB["height"])
        received = np.asarray(image.convert("RGB"))

    # The retry kept the seed: the survivor draws the very same image when asked directly.
    survivor_url, _ = workers[survivor]
    direct = httpx.post(f"{survivor_url}/generate", json=JOB, timeout=300)
    direct.raise_for_status()
    with Image.open(io.BytesIO(base64.b64decode(direct.json()["images"][0]))) as image:
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), received)
