"""Jobs through a balancer pair that shares a PostgreSQL store, while one balancer's jobs service keeps dying.

``JobsServiceKiller`` SIGKILLs the jobs service (``python -m jobs``) of one balancer host whenever it runs, for a
while: its sidecar restarts it and, after a few deaths, holds it down as crash-looping. ``StrictJobClient``
submits jobs (``POST /v1/jobs`` with an ``Idempotency-Key``, some with ``Prefer: wait``) and reads them until
they end, counting every answer that was not a success: unlike ``bench.harness.job_client``, it waits out
nothing, so a failed request shows. ``tests/test_pair_jobs.py`` runs both through the floating address;
``retry_jobs_service`` has the sidecar start a crash-looped jobs service again, for the module's next test.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from balancer.cli.ctl import DEFAULT_SIDECAR, DEFAULT_USER
from bench.harness.netns import NetworkLab

TERMINAL = ("succeeded", "failed", "canceled")


def module_pid(lab: NetworkLab, host: str, module: str) -> int | None:
    """The PID of a process of ``host``'s namespace running ``python -m MODULE`` (``jobs``: its jobs service,
    ``webui.worker``: a worker), if one runs."""
    for pid in lab.pids(host):
        with contextlib.suppress(psutil.Error):
            argv = psutil.Process(pid).cmdline()
            if any(argv[i:i + 2] == ["-m", module] for i in range(len(argv) - 1)):
                return pid
    return None


def jobs_service_pid(lab: NetworkLab, host: str) -> int | None:
    """The PID of ``host``'s jobs service, if one runs."""
    return module_pid(lab, host, "jobs")


_RETRY = ("import sys, httpx, yaml; password = yaml.safe_load(open(sys.argv[1]))['stats']['password']; "
          "print(httpx.post(sys.argv[2], auth=(sys.argv[3], password), timeout=10).status_code)")


def retry_jobs_service(lab: NetworkLab, host: str, cluster_file: Path) -> int:
    """Ask balancer ``host``'s sidecar to start its jobs service again (``POST /retry/balancer/jobs``, with the
    stats password read from ``cluster_file`` there, never put on a command line); the answer's status: 202
    restarting, 409 it was not crash-looping (running, or restarting on its own)."""
    url = f"{DEFAULT_SIDECAR}/retry/balancer/jobs"
    return int(lab.run_in(host, [sys.executable, "-c", _RETRY, str(cluster_file), url, DEFAULT_USER]).strip())


class JobsServiceKiller(threading.Thread):
    """SIGKILLs ``host``'s jobs service each time one runs, for ``hold`` seconds; ``kills``: how many times."""

    def __init__(self, lab: NetworkLab, host: str, hold: float) -> None:
        super().__init__(name=f"kill-jobs-{host}", daemon=True)
        self.lab, self.host, self.hold = lab, host, hold
        self.kills = 0
        self.started_at = self.ended_at = 0.0

    def run(self) -> None:
        self.started_at = time.monotonic()
        while time.monotonic() - self.started_at < self.hold:
            pid = jobs_service_pid(self.lab, self.host)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    psutil.Process(pid).send_signal(signal.SIGKILL)
                    self.kills += 1
            time.sleep(0.05)
        self.ended_at = time.monotonic()


@dataclass
class Request:
    """One request as the client saw it."""

    what: str
    started: float
    seconds: float
    status: int | None
    """None: no answer (a transport error, in ``detail``)."""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class StrictJobClient:
    """Submits ``body`` jobs one after another and reads each to its end; every request is recorded."""

    http: httpx.Client
    body: dict[str, Any]
    wait: int = 0
    """``Prefer: wait=N`` on each submission (0: none): the answer is held while the job runs."""
    requests: list[Request] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Idempotency key -> the job's last view (its id, status, attempts)."""

    def call(self, what: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.requests.append(Request(what, started, time.monotonic() - started, None, type(exc).__name__))
            return None
        detail = "" if response.is_success else response.text[:200]
        self.requests.append(Request(what, started, time.monotonic() - started, response.status_code, detail))
        return response if response.is_success else None

    def one_job(self, index: int, follow_for: float) -> None:
        """Submit job ``index`` (a new key), then read it until it ends or ``follow_for`` s passed (a refused
        submission: a pause instead, so that a client facing an outage does not spin)."""
        key = f"pair-jobs-{uuid.uuid4().hex}"
        headers = {"Idempotency-Key": key, **({"Prefer": f"wait={self.wait}"} if self.wait else {})}
        body = {**self.body, "seed": int(self.body.get("seed", 0)) + index}
        answer = self.call("submit", "POST", "/v1/jobs", json=body, headers=headers)
        if answer is None:
            time.sleep(0.1)
            return
        view = answer.json()
        self.jobs[key] = view
        deadline = time.monotonic() + follow_for
        while view.get("status") not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.1)
            read = self.call("read", "GET", f"/v1/jobs/{view['id']}")
            if read is not None:
                view = self.jobs[key] = read.json()

    def run_until(self, stop: threading.Event, follow_for: float) -> None:
        """Jobs one after another until ``stop`` is set (the current one is followed to its end)."""
        index = 0
        while not stop.is_set():
            self.one_job(index, follow_for)
            index += 1

    def failed(self) -> list[Request]:
        return [request for request in self.requests if not request.ok]
