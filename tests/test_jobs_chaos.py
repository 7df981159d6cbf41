"""Chaos on the durable jobs path (opt-in soak: ``pytest -m soak``): under load from four kinds of client at once
(REST ``/generate``, straight to the workers, which record each as a job, as by default; REST ``/v1/jobs`` with an
``Idempotency-Key``; gradio_client; the studio page's protocol), a
seeded chaos thread SIGKILLs a worker, a web front, the jobs service or HAProxy every 8-12 s and waits until the
sidecar has it back. No job a client was told of is lost or answered twice, every recorded job ends, every image is
its seed's, no job's ``completed`` webhooks carry two results, and a client needs at most one resend of the same
job. Figures go to ``bench/results/jobs-chaos.md``.

``flock /tmp/ph-cluster.lock python -m pytest -q -m soak tests/test_jobs_chaos.py -s``
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from PIL import Image

from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import Job, Reply, pixels_digest
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.job_client import TERMINAL, JobApiClient
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import CALL_TIMEOUT, OK, Clock, LoadClient, Record, timed_call, under_load
from bench.harness.processes import REPO
from bench.harness.rest_client import RestClient
from bench.harness.waiting import wait_until
from jobs.api.models import WEBHOOK_FIELDS
from tests.helpers import write_section
from tests.suite_cluster import suite_options
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.soak

DURATION = float(os.environ.get("PORTRAIT_CHAOS_SECONDS", "150"))
"""Seconds of load and chaos (``PORTRAIT_CHAOS_SECONDS`` changes it)."""
THINK = 1.5
"""Seconds each client waits between two jobs (about 300 jobs in all)."""
KILL_EVERY = (8.0, 12.0)
"""Seconds between one part being ready again and the next kill (uniform, seeded)."""
RESEND_AFTER = 5.0
"""Seconds a client waits before it sends a failed job once more."""
SAMPLE = 20
"""Jobs whose seed is run again straight on a worker at the end."""
WAIT = 120.0
KINDS = ("rest", "rest_jobs", "gradio_client", "browser")
TARGETS = (("node1", "worker"), ("node2", "worker"), ("node1", "web"), ("node2", "web"),
           ("balancer", "jobs"), ("balancer", "haproxy"))
RESULTS = REPO / "bench" / "results" / "jobs-chaos.md"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedCluster]:
    policy = tmp_path_factory.mktemp("chaos") / "webhook-policy.json"  # the test's loopback receiver is allowed
    policy.write_text(json.dumps({"allow_http": True, "allow": ["127.0.0.1/32"]}))
    options = suite_options(model="standin:0.3", nodes=2, start_timeout=120,
                            sidecar={"probe_interval": 0.2, "backoff_initial": 0.2},
                            extra={"jobs": {"web_fronts": True}},  # REST straight to the workers (the default)
                            env={"PORTRAIT_JOBS_WEBHOOK_POLICY": str(policy), "PORTRAIT_JOBS_WEBHOOK_POLL": "0.2"})
    with LaunchedCluster(options, name="jobs-chaos") as launched:
        launched.wait_jobs_ready()
        yield launched


@dataclass
class Kill:
    target: str
    pid: int
    at: float
    back_after: float


@dataclass
class Ledger:
    """What the run saw, from every thread: each image a client got (kind, seed, job id, pixels), the job ids the
    jobs API accepted, each failed first try, each kill, the load average after it, and what went wrong."""

    seen: list[tuple[str, int, str | None, str]] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    first_failures: list[tuple[str, int, str]] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, kind: str, reply: Reply) -> Reply:
        with self.lock:
            self.seen.append((kind, reply.seed, reply.job_id, reply.pixels_sha256))
        return reply


def seed_base(kind: str) -> int:
    """Each client kind's seeds start here: every job of the run has its own seed."""
    return 100_000 * (KINDS.index(kind) + 1)


def job_of(kind: str, index: int) -> Job:
    return Job(prompt=f"chaos portrait {kind} {index}", steps=2, width=256, height=256,
               seed=seed_base(kind) + index)  # 256: the page's smallest size


def resending(clock: Clock, ledger: Ledger, kind: str, call: Callable[[Job], Reply],
              before_resend: Callable[[], None] = lambda: None) -> Callable[[int], Record]:
    """The client's ``i``-th call: its job, sent once more (the same job) after ``RESEND_AFTER`` if it failed."""
    def next_call(index: int) -> Record:
        job = job_of(kind, index)
        first = timed_call(clock, kind, kind, True, lambda: ledger.keep(kind, call(job)))
        if first.outcome == OK:
            return first
        with ledger.lock:
            ledger.first_failures.append((kind, job.seed, first.detail))
        time.sleep(RESEND_AFTER)

        def again() -> Reply:
            before_resend()
            return ledger.keep(kind, call(job))

        second = timed_call(clock, kind, kind, True, again)
        return replace(second, start=first.start, attempts=2, detail=f"{first.detail} | {second.detail}")
    return next_call


def chaos(cluster: LaunchedCluster, clock: Clock, ledger: Ledger) -> Callable[[threading.Event], None]:
    """The chaos thread: SIGKILL a random part, wait until the sidecar has it ready again, pause, for DURATION."""
    rng = random.Random(20)

    def entry(node: str, part: str) -> dict[str, Any]:
        return cluster.status()[part] if node == "balancer" else cluster.part_status(node, part)

    def back(node: str, part: str, count: int) -> bool:
        now = entry(node, part)
        return now["restarts"] >= count and now["state"] == "ready" and cluster.all_ready()

    def kill(node: str, part: str) -> None:
        count = entry(node, part)["restarts"] + 1
        pid = cluster.balancer_pid(part) if node == "balancer" else cluster.pid(node, part)
        cluster.busy_workers(timeout=5)  # mid-job where there is one: a job is then in flight through every part
        at = clock.now()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: back(node, part, count), f"{node}/{part} back after SIGKILL", WAIT, interval=0.1)
        cluster.wait_jobs_ready(WAIT)
        ledger.kills.append(Kill(part if node == "balancer" else f"{node}/{part}", pid, at, clock.now() - at))
        ledger.loads.append(os.getloadavg()[0])

    def operate(stop: threading.Event) -> None:
        try:
            deck: list[tuple[str, str]] = []  # every part in turn, in a shuffled order each round
            while not stop.wait(rng.uniform(*KILL_EVERY)) and clock.now() < DURATION:
                deck = deck or rng.sample(TARGETS, len(TARGETS))
                kill(*deck.pop())
        except Exception as exc:  # the test reports it: a thread's exception would only be a warning
            ledger.problems.append(f"chaos: {type(exc).__name__}: {exc}")
    return operate


def stored_jobs(cluster: LaunchedCluster) -> list[dict[str, Any]]:
    """Every job in the store, paging with the cursor."""
    found, cursor = [], None
    with httpx.Client(base_url=cluster.jobs_url, headers=cluster.internal_headers, timeout=30) as http:
        while True:
            page = http.get("/v1/jobs", params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
            found += page["jobs"]
            if not (cursor := page["next_cursor"]):
                return found


def run_load(cluster: LaunchedCluster, ledger: Ledger, webhook: str) -> list[Record]:
    clock, url = Clock(), cluster.public_url
    rest = RestClient(url, timeout=WAIT)
    jobs_api = JobApiClient(url, follow_for=CALL_TIMEOUT, on_accepted=lambda job_id: ledger.accepted.add(job_id),
                            fields={"webhook": webhook, "webhook_events_filter": ["completed"]})
    gradio = GradioApiClient(url + "/", call_timeout=CALL_TIMEOUT)
    browser = BrowserProtocolClient(url, timeout=CALL_TIMEOUT)
    calls: dict[str, tuple[Callable[[Job], Reply], Callable[[], None]]] = {
        "rest": (rest.generate, lambda: None),
        "rest_jobs": (lambda job: jobs_api.generate(job, key=f"chaos-{job.seed}"), lambda: None),
        "gradio_client": (gradio.generate, gradio.replace_client),  # a new session: the user reloads
        "browser": (browser.generate, browser.open),  # the tab reloads its page
    }
    clients = [LoadClient(kind, resending(clock, ledger, kind, *calls[kind]), pause=THINK) for kind in KINDS]
    closers = [rest.close, jobs_api.close, gradio.close, browser.close]
    return under_load(clients, closers, chaos(cluster, clock, ledger), DURATION + WAIT)


def rerun_digest(cluster: LaunchedCluster, job: dict[str, Any]) -> str:
    """SHA-256 of the image a worker makes now for the job's input (its seed)."""
    request = {name: value for name, value in job["input"].items() if name not in WEBHOOK_FIELDS}
    answer = httpx.post(f"{cluster.part_url('node1', 'worker')}/generate", json=request,
                        headers=cluster.internal_headers, timeout=WAIT)
    assert answer.status_code == 200, answer.text
    return hashlib.sha256(base64.b64decode(answer.json()["images"][0])).hexdigest()


Hooks = dict[str, list[tuple[str, tuple[str, ...]]]]
"""Job id -> (webhook-id, its results' SHA-256s) of each ``completed`` webhook received."""


def completed_hooks(receiver: Receiver) -> Hooks:
    hooks: Hooks = {}
    for got in list(receiver.received):
        body = json.loads(got.body)
        results = tuple(result["sha256"] for result in body["results"])
        hooks.setdefault(body["id"], []).append((got.headers["webhook-id"], results))
    return hooks


def render(records: list[Record], ledger: Ledger, stored: list[dict[str, Any]], lost: list[str], hooks: Hooks) -> str:
    kills, loads = ledger.kills, ledger.loads
    rows = ["| client | jobs | ok | failed first tries | resends that failed | median s | max extra s |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for kind in KINDS:
        mine = [r for r in records if r.kind == kind]
        latencies = [r.latency for r in mine if r.outcome == OK] or [0.0]
        median = statistics.median(latencies)
        firsts = sum(1 for k, *_ in ledger.first_failures if k == kind)
        rows.append(f"| {kind} | {len(mine)} | {sum(r.outcome == OK for r in mine)} | {firsts} "
                    f"| {sum(r.outcome != OK for r in mine)} | {median:.2f} | {max(latencies) - median:.2f} |")
    per_part = Counter(kill.target for kill in kills)
    statuses = Counter(job["status"] for job in stored)
    return "\n".join([
        "# Jobs chaos (tests/test_jobs_chaos.py)", "",
        f"One stand-in cluster (2 nodes, standin:0.3, jobs.rest and jobs.web_fronts on), {DURATION:g} s of load "
        f"from four clients ({THINK:g} s think time each), a seeded SIGKILL every {KILL_EVERY[0]:g}-{KILL_EVERY[1]:g} "
        f"s after the last part was ready again; a failed job is sent once more after {RESEND_AFTER:g} s.", "",
        *rows, "",
        "| part killed | kills | longest until ready again (s) |", "|---|---:|---:|",
        *(f"| {part} | {n} | {max(k.back_after for k in kills if k.target == part):.1f} |"
          for part, n in sorted(per_part.items())), "",
        f"- Jobs in the store: {len(stored)} ({', '.join(f'{s} {n}' for s, n in sorted(statuses.items()))}); "
        f"accepted by /v1/jobs: {len(ledger.accepted)}.",
        f"- Failed first tries: {len(ledger.first_failures)}; resends: {len(ledger.first_failures)}; "
        f"lost jobs: {len(lost)}.",
        *(f"  - {n} × {cause}" for cause, n in Counter(d.split(" | ")[0][:100] for *_, d in ledger.first_failures
                                                     ).most_common(8)),
        f"- Webhooks (rest_jobs, `completed`): {sum(map(len, hooks.values()))} deliveries for {len(hooks)} jobs, "
        f"{sum(len(h) - len(set(h)) for h in hooks.values())} delivered again with the same webhook-id, "
        f"{sum(len({r for _, r in h}) > 1 for h in hooks.values())} jobs with two different results.",
        f"- Machine load average (1 min) after each kill: max {max(loads, default=0):.2f}, "
        f"mean {statistics.fmean(loads) if loads else 0:.2f} ({os.cpu_count()} CPUs).", ""])


@pytest.mark.timeout(900)
def test_chaos_on_the_jobs_path_loses_no_job(cluster: LaunchedCluster, receiver: Receiver) -> None:
    ledger = Ledger()
    records = run_load(cluster, ledger, f"http://127.0.0.1:{receiver.port}/hook")
    wait_until(lambda: all(j["status"] in TERMINAL for j in stored_jobs(cluster)), "every stored job ended", WAIT)
    stored = stored_jobs(cluster)
    by_id = {job["id"]: job for job in stored}
    failed = [f"{r.kind}: {r.detail}" for r in records if r.outcome != OK]
    lost = failed + [job_id for job_id in ledger.accepted if by_id.get(job_id, {}).get("status") != "succeeded"]
    wait_until(lambda: ledger.accepted <= completed_hooks(receiver).keys(), "a webhook for every job", WAIT)
    hooks = completed_hooks(receiver)
    markdown = render(records, ledger, stored, lost, hooks)
    write_section(RESULTS, markdown)  # the pair twin's section (tests/test_pair_jobs_chaos.py) is kept
    print(markdown)

    assert not ledger.problems, ledger.problems
    assert not lost, lost[:5]
    # Only a synchronous REST job may end other than succeeded: canceled, when its client's connection died.
    unfinished = [job for job in stored if job["status"] != "succeeded"]
    assert all(job["input"]["seed"] // seed_base("rest") == 1 for job in unfinished), unfinished[:3]
    assert {job["status"] for job in unfinished} <= {"canceled"}, unfinished[:3]
    assert all(n == 1 for n in Counter((kind, seed) for kind, seed, *_ in ledger.seen).values())
    # One image per job as its clients saw it, and each is the job's stored result.
    images: dict[str, set[str]] = {}
    for kind, _seed, job_id, pixels in ledger.seen:
        assert job_id in by_id and by_id[job_id]["status"] == "succeeded", (kind, job_id)
        images.setdefault(job_id, set()).add(pixels)
    assert all(len(seen) == 1 for seen in images.values()), [j for j, s in images.items() if len(s) > 1]
    with httpx.Client(base_url=cluster.jobs_url, headers=cluster.internal_headers, timeout=30) as http:
        for job_id, (pixels,) in images.items():
            data = http.get(f"/v1/jobs/{job_id}/results/0").content
            assert hashlib.sha256(data).hexdigest() == by_id[job_id]["results"][0]["sha256"], job_id
            assert pixels_digest(Image.open(io.BytesIO(data))) == pixels, job_id
    # An Idempotency-Key sent again never made a second job.
    keyed = Counter(seed for job in stored if (seed := job["input"]["seed"]) // seed_base("rest") == 2)
    assert all(n == 1 for n in keyed.values()), [seed for seed, n in keyed.items() if n > 1]
    # No job's completed webhooks carry two different results, nor another result than the store's.
    for job_id, delivered in hooks.items():
        assert {results for _, results in delivered} == {tuple(r["sha256"] for r in by_id[job_id]["results"])}
    # The stand-in draws each seed's image the same way every time: a sample run again straight on a worker.
    succeeded = sorted((job for job in stored if job["status"] == "succeeded"), key=lambda job: job["id"])
    for job in random.Random(7).sample(succeeded, min(SAMPLE, len(succeeded))):
        assert rerun_digest(cluster, job) == job["results"][0]["sha256"], job["id"]
    assert {k.target.split("/")[-1] for k in ledger.kills} >= {"worker", "web", "jobs", "haproxy"}, ledger.kills
