"""Chaos on the jobs path of a balancer pair (``-m "soak and hosts"``): the one-box ``tests/test_jobs_chaos.py``'s twin.

Two balancer hosts share a floating address and one PostgreSQL job store (``bench.harness.pair``); two node hosts
run fixed-latency stand-in workers. Three clients submit jobs through the floating address (``POST /v1/jobs`` with
an ``Idempotency-Key``, then read each to its end; a failed submission is sent again with the same key, as a client
of a lost balancer does). A seeded chaos thread SIGKILLs, every few seconds, one of: the jobs service of the
balancer holding the address, a worker, or (once) the holder's whole balancer host (every process SIGKILLed, its
link down, as ``tests/test_pair.py`` does). Checked: every accepted job ends succeeded, one per key and one result
each, and the SHA-256 of a sample of results matches the same input run again straight on a worker. Bounded:
``KILLS`` kills, ``DURATION`` s of load. Figures go to a section of ``bench/results/jobs-chaos.md``.

``flock /tmp/ph-cluster.lock python -m pytest -q -m "soak and hosts" tests/test_pair_jobs_chaos.py -s``
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from balancer.config.loading import load_cluster_file
from bench.harness.generation import CallFailed, Job
from bench.harness.hosts_cluster import NODE_HOSTS, STANDIN_WORKER
from bench.harness.job_client import JobApiClient
from bench.harness.netns import NetworkLab, missing_for_labs
from bench.harness.pair import BALANCERS, LAB_HOSTS, PairCluster
from bench.harness.pair_jobs import module_pid
from bench.harness.postgres import BIN, PostgresServer
from bench.harness.processes import REPO, Processes
from bench.harness.waiting import wait_until
from jobs.store.schema import jobs as jobs_table
from jobs.store.schema import results as results_table
from tests.helpers import write_section
from tests.suite_cluster import suite_health
from webui.contract import CLUSTER_SECRET_HEADER


def _missing() -> str | None:
    if shutil.which("keepalived") is None:
        return "the pair chaos test needs Debian's keepalived (scripts/setup.sh --dev as root installs it)"
    if not (BIN / "initdb").is_file():
        return f"the pair chaos test needs PostgreSQL 15's server binaries in {BIN}"
    return missing_for_labs()


pytestmark = [pytest.mark.soak, pytest.mark.hosts, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]

EXAMPLE = load_cluster_file(REPO / "assets" / "cluster.pair.example.yaml")
HEALTH = suite_health({**EXAMPLE["health"], "slowstart": 0})
ADVERT = EXAMPLE["floating"]["advert_interval"]
DURATION = float(os.environ.get("PORTRAIT_CHAOS_SECONDS", "75"))
"""Seconds of load and chaos (``PORTRAIT_CHAOS_SECONDS`` changes it)."""
KILL_EVERY = (4.0, 7.0)
"""Seconds between two kills (uniform, seeded)."""
DECK = ("jobs", "jobs", "jobs", "worker", "worker", "worker", "worker", "balancer")
"""The kills, in a seeded order: the holder's jobs service, a worker, the holder's whole balancer host (once: the
other then serves alone)."""
CLIENTS = 3
THINK = 0.5
RESEND_FOR = 60.0
"""Seconds a client keeps sending a submission that failed (a lost balancer's address moves in about 2 s)."""
FOLLOW = 120.0
SAMPLE = 12
RESULTS = REPO / "bench" / "results" / "jobs-chaos.md"


@dataclass
class Ledger:
    accepted: dict[str, str] = field(default_factory=dict)
    """Idempotency key -> the job id the service answered."""
    ended: dict[str, str] = field(default_factory=dict)
    """Job id -> how its client saw it end."""
    resends: int = 0
    failed: list[str] = field(default_factory=list)
    kills: list[tuple[str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client_loop(url: str, number: int, ledger: Ledger, stop: threading.Event) -> None:
    """One client: jobs one after another; a failed submission sent again (same key) until it is accepted."""
    client = JobApiClient(url, timeout=30, follow_for=FOLLOW)
    index = 0
    try:
        while not stop.is_set():
            job = Job(prompt=f"pair chaos {number} {index}", steps=2, width=256, height=256,
                      seed=10_000 * (number + 1) + index)
            key = f"pair-chaos-{job.seed}"
            job_id, started = None, time.monotonic()
            while job_id is None and time.monotonic() - started < RESEND_FOR:
                try:
                    job_id = client.submit(job, key)
                except CallFailed:
                    with ledger.lock:
                        ledger.resends += 1
                    time.sleep(0.2)
            if job_id is None:
                ledger.failed.append(f"{key}: not accepted within {RESEND_FOR:g} s")
                continue
            with ledger.lock:
                ledger.accepted[key] = job_id
            try:
                ledger.ended[job_id] = client.follow(job_id)["status"]
            except CallFailed as exc:
                ledger.failed.append(f"{job_id}: {exc}")
            index += 1
            stop.wait(THINK)
    finally:
        client.close()


def chaos(cluster: PairCluster, ledger: Ledger, stop: threading.Event, started: float) -> None:
    """SIGKILL the next of ``DECK`` (shuffled, seeded) every few seconds, for at most ``DURATION`` s."""
    rng = random.Random(26)
    deck = rng.sample(DECK, len(DECK))
    try:
        while deck and not stop.wait(rng.uniform(*KILL_EVERY)) and time.monotonic() - started < DURATION:
            target = deck.pop()
            holder = wait_until(cluster.holder, "a balancer holding the address", 30, 0.1)
            if target == "balancer":
                cluster.kill_balancer(holder)
            else:
                host = holder if target == "jobs" else rng.choice(sorted(NODE_HOSTS.values()))
                pid = wait_until(lambda h=host, t=target: module_pid(cluster.lab, h, "jobs" if t == "jobs"
                                                                     else "webui.worker"),
                                 f"a {target} running on {host}", 60, 0.1)
                os.kill(pid, signal.SIGKILL)
            ledger.kills.append((target, time.monotonic() - started))
    except Exception as exc:  # reported by the test: a thread's exception would only be a warning
        ledger.problems.append(f"chaos: {type(exc).__name__}: {exc}")


def stored(store: str) -> tuple[dict[str, str], Counter[str], dict[str, list[str]], dict[str, dict]]:
    """From the store: job id -> status, jobs per idempotency key, job id -> its outputs' SHA-256, job id -> input."""
    engine = create_engine(store, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(jobs_table.c.id, jobs_table.c.status, jobs_table.c.idempotency_key,
                                             jobs_table.c.input)).all()
            outputs = connection.execute(select(results_table.c.job_id, results_table.c.sha256)
                                         .where(results_table.c.role == "output")).all()
            assert connection.execute(select(func.count()).select_from(jobs_table)).scalar() == len(rows)
    finally:
        engine.dispose()
    hashes: dict[str, list[str]] = {}
    for job_id, sha in outputs:
        hashes.setdefault(job_id, []).append(sha)
    return ({r.id: r.status for r in rows}, Counter(r.idempotency_key for r in rows), hashes,
            {r.id: dict(r.input) for r in rows})


def rerun_sha256(worker_url: str, secret: str, request: dict) -> str:
    """SHA-256 of the image a worker makes now for ``request`` (a job's input)."""
    answer = httpx.post(f"{worker_url}/generate", json=request, headers={CLUSTER_SECRET_HEADER: secret}, timeout=60)
    assert answer.status_code == 200, answer.text
    return hashlib.sha256(base64.b64decode(answer.json()["images"][0])).hexdigest()


@pytest.mark.timeout(900)
def test_chaos_across_a_balancer_pair_loses_no_job(tmp_path: Path) -> None:
    ledger = Ledger()
    with (Processes("pair-chaos") as processes, NetworkLab(LAB_HOSTS, processes) as lab,
          PostgresServer(lab.client_address) as postgres):
        store = postgres.create_database()
        cluster = PairCluster(lab, tmp_path, HEALTH, ADVERT, worker_args=STANDIN_WORKER, jobs={"store_url": store})
        cluster.start(timeout=240)
        first_holder = cluster.holder()
        stop = threading.Event()
        started = time.monotonic()
        clients = [threading.Thread(target=client_loop, args=(cluster.url, n, ledger, stop)) for n in range(CLIENTS)]
        operator = threading.Thread(target=chaos, args=(cluster, ledger, stop, started))
        for thread in [*clients, operator]:
            thread.start()
        operator.join(timeout=DURATION + 120)
        stop.wait(max(0.0, DURATION - (time.monotonic() - started)))
        stop.set()
        for thread in clients:
            thread.join(timeout=FOLLOW + RESEND_FOR + 30)
        load_s = time.monotonic() - started
        statuses, per_key, hashes, inputs = stored(store)
        secret = Path(load_cluster_file(cluster.file)["cluster_secret_file"]).read_text().strip()
        worker = cluster.worker_urls()[0]
        succeeded = sorted(job_id for job_id, status in statuses.items() if status == "succeeded")
        sample = random.Random(7).sample(succeeded, min(SAMPLE, len(succeeded)))
        wait_until(lambda: module_pid(lab, NODE_HOSTS["node1"], "webui.worker"), "node1's worker running", 60, 0.1)
        reruns = {job_id: rerun_sha256(worker, secret, inputs[job_id]) for job_id in sample}

    kinds = Counter(target for target, _ in ledger.kills)
    markdown = "\n".join([
        "## In a balancer pair (tests/test_pair_jobs_chaos.py)", "",
        f"Two balancer hosts sharing a floating address and one PostgreSQL store, two node hosts (standin:0.3), "
        f"{CLIENTS} /v1/jobs clients ({THINK:g} s think time) for {load_s:.0f} s; a seeded SIGKILL every "
        f"{KILL_EVERY[0]:g}-{KILL_EVERY[1]:g} s ({len(DECK)} at most) of the holder's jobs service, a worker, or "
        f"once the holder's whole balancer host (its link down too; first holder {first_holder}); a failed "
        "submission is sent again with its Idempotency-Key.", "",
        "| killed | times |", "|---|---:|", *(f"| {kind} | {n} |" for kind, n in sorted(kinds.items())), "",
        f"- Jobs accepted: {len(ledger.accepted)}; in the store: {len(statuses)} "
        f"({', '.join(f'{s} {n}' for s, n in sorted(Counter(statuses.values()).items()))}); "
        f"resent submissions: {ledger.resends}; failed calls: {len(ledger.failed)}.",
        f"- Results whose SHA-256 matched a rerun on a worker: {sum(reruns[j] == hashes[j][0] for j in reruns)} "
        f"of {len(reruns)}.",
        f"- Kills (s into the run): {', '.join(f'{at:.0f} {target}' for target, at in ledger.kills)}; load average "
        f"(1 min) at the end "
        f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs).",
        ""])
    write_section(RESULTS, markdown)
    print(markdown)

    assert not ledger.problems, ledger.problems
    assert not ledger.failed, ledger.failed[:5]
    assert set(ledger.accepted.values()) <= set(statuses), "an accepted job is not in the store"
    assert {job_id: statuses[job_id] for job_id in ledger.accepted.values()} == \
        dict.fromkeys(ledger.accepted.values(), "succeeded")
    assert all(n == 1 for n in per_key.values()), [key for key, n in per_key.items() if n > 1]
    assert all(len(hashes.get(job_id, [])) == 1 for job_id in ledger.accepted.values())
    assert all(reruns[job_id] == hashes[job_id][0] for job_id in reruns), reruns
    assert kinds["balancer"] == 1 and kinds["jobs"] and kinds["worker"], ledger.kills
    assert first_holder in BALANCERS.values()
