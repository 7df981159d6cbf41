"""A jobs service (``python -m jobs``) and real stand-in workers (``python -m webui.worker --model standin:S``) as
processes a test may kill and start again on the same port: shared by the jobs service's end-to-end tests."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.harness.processes import LOG_DIR, Processes, free_port, kill_tree
from bench.harness.waiting import wait_http, wait_until
from webui.contract import CLUSTER_SECRET_ENV, CLUSTER_SECRET_HEADER

SECRET = {CLUSTER_SECRET_ENV: "jobs-test-cluster-secret"}
PART = {CLUSTER_SECRET_HEADER: SECRET[CLUSTER_SECRET_ENV]}
"""What HAProxy adds to every request it passes to the service (which refuses others)."""
JOB = {"prompt": "a studio portrait", "width": 64, "height": 64, "steps": 8}
WAIT = 60.0
"""Bound (seconds) on anything a test waits for."""
PAGE_LISTEN_GRACE = 5.0
"""Seconds a page may take to open its event stream after a click (``--listen-grace``): a job is recorded only for
a client that listens, and a page on a loaded machine took over 1 s (its click then made no job)."""


@dataclass
class Part:
    """A process a test may kill and start again on the same port."""

    processes: Processes
    args: list[str]
    name: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Part:
        self.proc = self.processes.start([*self.args, "--port", str(self.port)], env=SECRET, log_name=self.name)
        return self

    def ready(self, path: str) -> Part:
        wait_http(self.url + path, proc=self.proc, timeout=WAIT)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        kill_tree(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log(self) -> str:
        return Path(self.proc.log_path).read_text(errors="replace")


def worker(processes: Processes, name: str, seconds: float | str) -> Part:
    """A stand-in worker: ``seconds`` a job, or e.g. ``"0.5/step"`` a step."""
    return Part(processes, ["python", "-m", "webui.worker", "--model", f"standin:{seconds}", "--node", name,
                            "--warmup-steps", "1", "--queue-size", "0"], name)


def service(processes: Processes, name: str, worker_url: str, store_url: str, *flags: str) -> Part:
    run_dir = LOG_DIR / f"{processes.name}-{name}-run"  # its generated secrets, never the checkout's run/
    return Part(processes, ["python", "-m", "jobs", "--store-url", store_url, "--worker-queue-url", worker_url,
                            "--run-dir", str(run_dir), "--lease-seconds", "2", "--janitor-every", "3600", *flags],
                name)


@dataclass
class Site:
    """A jobs service and its worker."""

    service: Part
    worker: Part
    store_url: str

    def post(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return httpx.post(f"{self.service.url}/v1/jobs", json=body, headers={**PART, **headers}, timeout=WAIT + 5)

    def get(self, path: str, **headers: str) -> httpx.Response:
        return httpx.get(self.service.url + path, headers={**PART, **headers}, timeout=WAIT)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(f"/v1/jobs/{job_id}").json()

    def until(self, job_id: str, done: Any, what: str) -> dict[str, Any]:
        return wait_until(lambda: job if done(job := self.job(job_id)) else None, what, timeout=WAIT)

    def finished(self, job_id: str) -> dict[str, Any]:
        return self.until(job_id, lambda job: job["status"] in ("succeeded", "failed", "canceled"), "job finished")

    def worker_jobs(self, outcome: str = "ok") -> float:
        """Streamed jobs the worker ended with ``outcome``, from its ``/metrics`` (since it started)."""
        text = httpx.get(f"{self.worker.url}/metrics", timeout=10).text
        return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == "portrait_worker_requests_total"
                   and sample.labels == {"endpoint": "/generate/stream", "outcome": outcome})


def start_site(processes: Processes, name: str, store_url: str, seconds: float, *flags: str) -> Site:
    part = worker(processes, f"{name}-worker", seconds).start()
    return Site(service(processes, f"{name}-jobs", part.url, store_url, *flags).start(), part, store_url)


def ready(site: Site, worker_path: str = "/readyz") -> Site:
    site.worker.ready(worker_path)
    site.service.ready("/healthz")
    return site


def sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of an SSE stream: ``{"event", "id", "data"}`` (comments skipped)."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value


def events(site: Site, job_id: str, **headers: str) -> list[dict[str, Any]]:
    with httpx.stream("GET", f"{site.service.url}/v1/jobs/{job_id}/events", headers={**PART, **headers},
                      timeout=WAIT) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        return list(sse(answer))


def accounts_cli(store_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m jobs accounts ARGS`` on ``store_url`` (given in the environment, as an operator would), run in
    this process (its ``main``: a fresh interpreter costs a second or two; the console script itself is
    ``tests/test_accounts_api.py``'s), with ``stdin`` as its standard input (a piped password)."""
    from jobs.accounts_cli import main

    out, err = io.StringIO(), io.StringIO()
    logging.disable(logging.CRITICAL)  # what it prints is its answer; this process's log handlers are not its own
    try:
        with mock.patch.dict(os.environ, {"PORTRAIT_JOBS_STORE_URL": store_url}), redirect_stdout(out), \
                redirect_stderr(err), mock.patch("sys.stdin", io.StringIO(stdin)):
            code = main(list(args))
    except SystemExit as exit_:  # argparse's refusals
        code = exit_.code if isinstance(exit_.code, int) else 2
    finally:
        logging.disable(logging.NOTSET)
    return subprocess.CompletedProcess(["python", "-m", "jobs", "accounts", *args], code, out.getvalue(),
                                       err.getvalue())
