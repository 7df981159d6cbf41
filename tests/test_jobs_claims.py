"""Dispatchers and the job store, on SQLite and on a real PostgreSQL server: a claim is atomic across
processes (no job handed out twice, none skipped), an expired lease makes a job claimable again, and a result
is written exactly once when two dispatchers ran the same job.

Run under the cluster lock (the PostgreSQL half starts a server):
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_jobs_claims.py``.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError

from bench.harness.postgres import PostgresServer
from bench.harness.waiting import wait_until
from jobs.contract import CANCELED, PROCESSING, SUCCEEDED
from jobs.store import (
    Image,
    Lease,
    claim_next,
    finish,
    get,
    make_engine,
    renew,
    result_data,
    stored_results,
    submit,
    submit_held,
    upgrade,
)
from jobs.store.records import utc_now
from jobs.store.schema import jobs

JOBS = 100
PROCESSES = 2


def claim_many(url: str, dispatcher: str, claims: int, start: threading.Barrier) -> list[str | None]:
    """``claims`` claims in a row by ``dispatcher`` in a process of its own (its own engine and connections)."""
    engine = make_engine(url)
    try:
        start.wait()
        return [getattr(claim_next(engine, dispatcher), "id", None) for _ in range(claims)]
    finally:
        engine.dispose()


def test_claims_across_processes_never_hand_out_a_job_twice(store_url: str, job_store: Engine) -> None:
    """Two processes take 50 jobs each from 100, as fast as they can, at the same moment: every claim gets a job
    and all 100 are different (PostgreSQL: the claim's row lock, ``FOR UPDATE``; SQLite: its write lock)."""
    made = {submit(job_store, {"n": n})[0].id for n in range(JOBS)}
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(PROCESSES) as pool:
        start = manager.Barrier(PROCESSES)
        claimed = pool.starmap(claim_many, [(store_url, f"d{n}", JOBS // PROCESSES, start)
                                            for n in range(PROCESSES)])
    everything = [job_id for ids in claimed for job_id in ids]
    assert None not in everything, f"{everything.count(None)} claims found no job while jobs were waiting"
    assert len(everything) == len(set(everything)) == JOBS, "a job was handed to two dispatchers"
    assert set(everything) == made
    assert claim_next(job_store, "late") is None


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_a_claim_passes_over_a_job_another_transaction_holds(job_store: Engine) -> None:
    """While another host's transaction holds the oldest job's row (a claim mid-commit), a claim takes the next
    job at once instead of waiting for that transaction (``SKIP LOCKED``); the wait is bounded only so that the
    test ends: without SKIP LOCKED the claim would get the first job after the holder lets go."""
    first, second = (submit(job_store, {"n": n})[0] for n in range(2))
    claimed: list[str | None] = []
    with job_store.connect() as holder, holder.begin():
        holder.execute(select(jobs.c.id).where(jobs.c.id == first.id).with_for_update())
        claimer = threading.Thread(target=lambda: claimed.append(getattr(claim_next(job_store, "d2"), "id", None)))
        claimer.start()
        claimer.join(timeout=10)
    claimer.join()
    assert claimed == [second.id]


def test_a_job_held_for_a_waiting_client_is_never_claimed_and_ends_canceled_with_its_holder(job_store: Engine) -> None:
    """A synchronous generation's job is recorded already held (one transaction); no dispatcher takes it, not even
    after its holder's lease ran out: then its client's connection is gone too, and the job ends ``canceled``."""
    t0 = utc_now()
    held = submit_held(job_store, {"prompt": "p", "seed": 1}, "sync-1", lease_seconds=10, now=t0)
    assert (held.status, held.attempts, held.claim_owner) == (PROCESSING, 1, "client:sync-1")
    assert renew(job_store, held.id, "client:sync-1", lease_seconds=10, now=t0 + timedelta(seconds=9)) is Lease.HELD
    assert claim_next(job_store, "d1", now=t0 + timedelta(seconds=30)) is None
    assert get(job_store, held.id).status == CANCELED


def test_an_expired_lease_makes_the_job_claimable_again(job_store: Engine) -> None:
    job = submit(job_store, {"n": 1})[0]
    t0 = utc_now()
    assert claim_next(job_store, "d1", lease_seconds=10, now=t0).id == job.id
    assert claim_next(job_store, "d2", now=t0 + timedelta(seconds=9)) is None  # d1's lease is live
    assert renew(job_store, job.id, "d1", lease_seconds=10, now=t0 + timedelta(seconds=9)) is Lease.HELD
    assert claim_next(job_store, "d2", now=t0 + timedelta(seconds=18)) is None  # renewed until 19 s
    taken = claim_next(job_store, "d2", now=t0 + timedelta(seconds=20))  # d1 died: no renewal since 9 s
    assert (taken.id, taken.status, taken.claim_owner, taken.attempts) == (job.id, PROCESSING, "d2", 2)
    assert renew(job_store, job.id, "d1", now=t0 + timedelta(seconds=21)) is Lease.LOST
    assert renew(job_store, job.id, "d2", now=t0 + timedelta(seconds=21)) is Lease.HELD


def test_a_result_is_written_once_when_two_dispatchers_ran_the_job(job_store: Engine) -> None:
    """d1's lease expires mid-job, d2 takes it over; both GPUs finish and report at the same moment with
    different bytes: one result is the job's, the other is discarded and reported as such."""
    for round_ in range(5):  # five races: each may go either way, never both
        job = submit(job_store, {"n": round_})[0]
        t0 = utc_now()
        claim_next(job_store, "d1", now=t0)
        assert claim_next(job_store, "d2", now=t0 + timedelta(seconds=11)).id == job.id
        start = threading.Barrier(2)

        def report(data: bytes, job_id: str = job.id, start: threading.Barrier = start):
            start.wait()
            return data, finish(job_store, job_id, [Image(data), Image(data + b"-2")])

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(report, [b"from-d1", b"from-d2"]))
        winners = [data for data, settled in outcomes if settled.written]
        assert len(winners) == 1, f"round {round_}: {len(winners)} results written"
        assert [settled.job.status for _, settled in outcomes] == [SUCCEEDED] * 2
        assert [result.size for result in stored_results(job_store, job.id)] == [len(winners[0]), len(winners[0]) + 2]
        assert result_data(job_store, job.id, 0)[1] == winners[0]
        assert get(job_store, job.id).status == SUCCEEDED


def test_a_transaction_left_open_by_a_silent_host_frees_its_job_in_seconds(postgres_server: PostgresServer) -> None:
    """A host cut off mid-transaction (here: a connection that holds a job's row lock and sends nothing more, as
    the server sees a cut cable) costs the job seconds, not the kernel's two hours: the server ends the idle
    session (``idle_in_transaction_s``), its lock goes, and another dispatcher claims the job."""
    url = postgres_server.create_database()
    upgrade(url)
    silent, other = make_engine(url, idle_in_transaction_s=1.0), make_engine(url)
    try:
        job_id = submit(other, {"n": 1})[0].id
        connection = silent.connect()
        connection.begin()
        connection.execute(select(jobs.c.id).where(jobs.c.id == job_id).with_for_update())
        assert claim_next(other, "d-live") is None  # the row is locked: the claim passes over it
        claimed = wait_until(lambda: claim_next(other, "d-live"), "the locked job claimable", 6.0, 0.2)
        assert claimed.id == job_id
        with pytest.raises(DBAPIError):  # the server ended the silent session
            connection.execute(select(jobs.c.id))
        connection.invalidate()
    finally:
        silent.dispose()
        other.dispose()
    postgres_server.drop_database(url)
