"""Bounded waits: a balancer cut off mid-job costs its jobs' clients seconds, never a hang to their timeout.

The two-balancer lab of ``tests/test_pair.py`` (``bench.harness.pair``), both balancers' jobs services on one
PostgreSQL store (listening on the lab's subnet), workers serving the fixed-latency stand-in. Four REST clients
(``bench.harness.job_client.JobApiClient``: docs/api.md's advice, a read timeout of a few seconds, TCP
keep-alive, resends with the same ``Idempotency-Key``, re-attach with ``Last-Event-ID``) each submit a job
and follow its events through the floating address; once both workers run one, the holder's link goes down
with every process of it alive (a cut cable: nothing resets a connection). Checked: every job succeeds, once
(one job per key); no read waited longer than the client's read timeout, and a live stream never went quiet
that long (each client re-attached once at most: for the cut); every job ended within a bound made
of the configured times (the dead dispatcher's lease, the address's move, keep-alive, the jobs themselves);
and the cut balancer's HAProxy ended its client connections within its ``tcp-ut`` after its last write to them (a
stream's heartbeat, or the answer to a request that waited on the cut-off store: a 503, never a 500). Figures go to
``test-artifacts/pair-failover.json`` (``balancer-cut``).

Root only, with ``ip``, Debian's ``iptables``, ``keepalived`` and PostgreSQL; select with ``-m hosts``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.harness.generation import CallFailed, Job, Reply
from bench.harness.job_client import READ_TIMEOUT_S, RESEND_AFTER_S, JobApiClient
from bench.harness.netns import NetworkLab
from bench.harness.pair import LAB_HOSTS, PairCluster
from bench.harness.postgres import BIN, MISSING, PostgresServer
from bench.harness.processes import REPO, Processes
from bench.harness.waiting import wait_until
from jobs.api.sse import HEARTBEAT_S
from jobs.contract import LEASE_SECONDS
from jobs.store.engine import CLIENT as STORE_CLIENT
from tests.helpers import record_figures
from tests.test_pair import ADVERT, HEALTH
from tests.test_pair import pytestmark as pair_marks
from webui import keepalive

pytestmark = [*pair_marks, pytest.mark.skipif(not (BIN / "initdb").is_file(), reason=MISSING)]

ARTIFACT = REPO / "test-artifacts" / "pair-failover.json"
JOB_S = 3.0
"""Seconds each stand-in job takes (long enough to be cut mid-way)."""
WORKER = ["--model", f"standin:{JOB_S:g}", "--threads", "1"]
CLIENTS = 4
"""Two jobs run (one per worker), two wait in the queue when the cable is cut."""
MOVE_S = 4 * ADVERT
"""The address moves within 3 missed adverts plus a priority skew under one advert (keepalived)."""
BOUND_S = LEASE_SECONDS + MOVE_S + keepalive.DEAD_AFTER_S + 2 * JOB_S + sum(RESEND_AFTER_S[:3])
"""From the cut until every job ended: a job held by the cut balancer's dispatcher is taken again after its lease;
a dispatch through the cut balancer ends by keep-alive once the address moved; then up to two jobs per worker."""
STORE_SILENT_S = STORE_CLIENT["tcp_user_timeout"] / 1000
"""A store call under way at the cut fails after this (libpq's ``tcp_user_timeout``): a request that waited on it
(e.g. the check before an event stream starts) is answered then, and that answer is the connection's last write."""


@dataclass
class Outcome:
    reply: Reply | None
    error: str
    ended: float
    client: JobApiClient


def run_job(url: str, index: int, outcomes: dict[int, Outcome]) -> None:
    client = JobApiClient(url, follow_for=BOUND_S + 15)  # then the job counts as lost
    job = Job(prompt=f"studio portrait, cut cable {index}", steps=4, width=64, height=64, seed=7100 + index)
    try:
        reply, error = client.generate(job, key=f"cut-cable-{index}"), ""
    except CallFailed as exc:
        reply, error = None, str(exc)
    outcomes[index] = Outcome(reply, error, time.monotonic(), client)


def public_sessions(cluster: PairCluster, host: str) -> int:
    """Connections the public frontend of balancer ``host``'s HAProxy holds now (its runtime API, a local socket)."""
    rows = cluster.apis[host].show_stat()
    return int(next(row["scur"] for row in rows if row["pxname"] == "public" and row["svname"] == "FRONTEND"))


def answered(cluster: PairCluster, host: str) -> list[int]:
    """The statuses balancer ``host``'s public frontend answered, from its HAProxy log."""
    log = (cluster.run_dirs[host] / "haproxy.log").read_text(errors="replace")
    return [int(status) for status in re.findall(r"\] public \S+ \S+ (\d{3}) ", log)]


def configured_tcp_ut(cluster: PairCluster, host: str) -> float:
    """The public bind's ``tcp-ut`` in balancer ``host``'s rendered haproxy.cfg (seconds; inf when none)."""
    found = re.search(r"^\s*bind \S+ .*tcp-ut (\d+)s", (cluster.run_dirs[host] / "haproxy.cfg").read_text(), re.M)
    return float(found.group(1)) if found else float("inf")


def test_a_cut_off_balancer_costs_its_job_clients_seconds_not_a_hang(tmp_path: Path) -> None:
    with (Processes("pair-waits") as processes, NetworkLab(LAB_HOSTS, processes) as lab,
          PostgresServer(lab.client_address) as store):
        cluster = PairCluster(lab, tmp_path, HEALTH, ADVERT, worker_args=WORKER,
                              jobs={"store_url": store.url})
        cluster.start(timeout=240)
        holder = cluster.holder()
        assert holder is not None
        outcomes: dict[int, Outcome] = {}
        threads = [threading.Thread(target=run_job, args=(cluster.url, index, outcomes)) for index in range(CLIENTS)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len([s for s in cluster.api.servers("workers") if s.current_sessions > 0]) == 2,
                   "both workers running a job", 60, 0.05)
        sessions_at_cut = public_sessions(cluster, holder)
        cut_at = time.monotonic()
        lab.set_link(holder, False)
        moved_to = wait_until(cluster.holder, "the floating address on the other balancer", 20, 0.02)
        moved_s = time.monotonic() - cut_at
        tcp_ut = configured_tcp_ut(cluster, holder)
        # HAProxy's client connections end once data sent on them stays unacknowledged for tcp-ut; after the cut
        # the first byte is the stream's next ping (a heartbeat later), or the answer to a request that waits on the
        # cut-off store (when the store call fails).
        cleaned_bound = min(tcp_ut, 60) + max(HEARTBEAT_S, STORE_SILENT_S) + 5
        cleaned_s = None
        while any(thread.is_alive() for thread in threads) or (
                cleaned_s is None and time.monotonic() - cut_at < cleaned_bound + 5):
            if cleaned_s is None and public_sessions(cluster, holder) == 0:
                cleaned_s = time.monotonic() - cut_at
            time.sleep(0.2)
        lister = JobApiClient(cluster.url)
        listed = lister.http.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
        lister.close()
        for client in (o.client for o in outcomes.values()):
            client.close()

    replies = [o.reply for o in outcomes.values() if o.reply is not None]
    ended_s = [round(o.ended - cut_at, 2) for o in outcomes.values()]
    clients = [o.client for o in outcomes.values()]
    figures = {
        "address_moved_after_s": round(moved_s, 2), "jobs": CLIENTS, "jobs_succeeded": len(replies),
        "jobs_lost": CLIENTS - len(replies), "jobs_in_store": len(listed),
        "attempts": sorted(r.attempts or 1 for r in replies), "jobs_ended_after_cut_s": sorted(ended_s),
        "most_extra_s": round(max(ended_s) - 2 * JOB_S, 2), "bound_s": round(BOUND_S, 2),
        "failed_first_tries": sum(c.resends + c.reattached for c in clients),
        "resends": sum(c.resends for c in clients), "reattached": sum(c.reattached for c in clients),
        "longest_silence_s": round(max(c.longest_silence_s for c in clients), 2), "read_timeout_s": READ_TIMEOUT_S,
        "cut_balancer_connections": sessions_at_cut,
        "cut_balancer_connections_ended_after_s": round(cleaned_s, 2) if cleaned_s is not None else None,
        "tcp_ut_s": tcp_ut, "cut_balancer_answers": sorted(set(answered(cluster, holder))),
        "load_average": os.getloadavg(),
    }
    record_figures(ARTIFACT, "balancer-cut", figures)
    print(f"\nbalancer {holder} cut: {figures}")

    assert moved_to != holder
    assert [o.error for o in outcomes.values() if o.reply is None] == []
    assert len({r.job_id for r in replies}) == CLIENTS
    assert len(listed) == CLIENTS and {job["status"] for job in listed} == {"succeeded"}  # one job per key
    assert figures["longest_silence_s"] <= READ_TIMEOUT_S + 1  # no read waited past the client's read timeout
    assert figures["reattached"] <= CLIENTS  # once for the cut; a live stream's heartbeat beats the read timeout
    assert max(ended_s) <= BOUND_S, (ended_s, BOUND_S)
    assert 500 not in figures["cut_balancer_answers"]  # a store that does not answer is a 503 to resend
    assert sessions_at_cut > 0 and cleaned_s is not None and cleaned_s <= cleaned_bound  # HAProxy let go of them
