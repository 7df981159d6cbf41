"""``python -m jobs`` sends a job's webhook from its store, across a restart: a failed first attempt leaves the
delivery pending in the store; the service is killed and started again, and the restarted service delivers it,
signed with the secret it generated once into the run directory (mode 0600, never in its log).

No worker is needed: the job's worker queue is a closed port and its deadline short, so the job ends ``failed``
within a second and its ``completed`` event is what the webhook gets. Run under the cluster lock:
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_webhook_service.py``.
"""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path

import httpx
from standardwebhooks import Webhook

from bench.harness.processes import Processes, free_port, kill_tree
from bench.harness.waiting import wait_http, wait_until
from tests.webhook_receiver import Receiver

WAIT = 30.0


def test_a_pending_delivery_survives_a_restart_and_is_delivered_signed_with_the_generated_secret(
        tmp_path: Path) -> None:
    policy = tmp_path / "webhook-policy.json"
    policy.write_text(json.dumps({"allow_http": True, "allow": ["127.0.0.1/32"]}))
    port, run_dir = free_port(), tmp_path / "run"
    args = ["python", "-m", "jobs", "--run-dir", str(run_dir), "--port", str(port), "--worker-queue-url",
            f"http://127.0.0.1:{free_port()}", "--job-timeout", "0.5", "--webhook-policy", str(policy),
            "--webhook-first-retry", "1", "--webhook-poll", "0.2", "--janitor-every", "3600"]
    jobs = f"http://127.0.0.1:{port}"
    with Processes("webhook-service") as processes, Receiver(answers=[503]) as receiver:
        service = processes.start(args, log_name="webhook-service")
        wait_http(f"{jobs}/healthz", proc=service, timeout=WAIT)
        job = httpx.post(f"{jobs}/v1/jobs", json={"prompt": "a portrait", "webhook_events_filter": ["completed"],
                                                  "webhook": f"http://127.0.0.1:{receiver.port}/hook"}, timeout=WAIT)
        assert job.status_code == 202, job.text
        deliveries = f"{jobs}/v1/jobs/{job.json()['id']}/deliveries"
        wait_until(lambda: [a for d in httpx.get(deliveries, timeout=WAIT).json()["deliveries"] for a in d["attempts"]],
                   "the first attempt in the delivery log", timeout=WAIT)
        kill_tree(service.pid, signal.SIGKILL)  # before the retry (0.8 s later at the earliest)
        service.wait(timeout=10)
        assert len(receiver.received) == 1
        logs = [service.log_path]
        service = processes.start(args, log_name="webhook-service")
        wait_http(f"{jobs}/healthz", proc=service, timeout=WAIT)
        log = wait_until(lambda: (found := httpx.get(deliveries, timeout=WAIT).json()["deliveries"])[0]["status"]
                         == "delivered" and found, "the retry after the restart", timeout=WAIT)
        kill_tree(service.pid, signal.SIGTERM)
        service.wait(timeout=10)
        service_log = "".join(Path(path).read_text(errors="replace") for path in [*logs, service.log_path])
    secret_file = run_dir / "webhook-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert secret.startswith("whsec_") and secret not in service_log and "webhook-secret" in service_log
    assert [a["status_code"] for a in log[0]["attempts"]] == [503, 204] and len(receiver.received) == 2
    bodies = [Webhook(secret).verify(request.body, request.headers) for request in receiver.received]
    assert bodies[0] == bodies[1] and bodies[0]["status"] == "failed" and "No worker could" in bodies[0]["error"]
