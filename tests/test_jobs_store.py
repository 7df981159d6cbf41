"""The job store's repository on SQLite and on a real PostgreSQL server (each test runs on both): idempotent
submissions, queue positions, newest-first paging, cancels, the event log, and the janitor's deletions and
tombstones. Claims, leases and finishing once: ``tests/test_jobs_claims.py``.

Run under the cluster lock (the PostgreSQL half starts a server):
``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_jobs_store.py``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select

from jobs.contract import CANCELED, EVENT_PROGRESS, EXPIRED, PROCESSING, STARTING, SUCCEEDED
from jobs.errors import IdempotencyConflict, InvalidCursor, JobGone, JobNotFound
from jobs.store import (
    Image,
    Lease,
    QueueEstimate,
    cancel,
    claim_next,
    events_after,
    finish,
    get,
    list_newest_first,
    mark_canceled,
    queue_estimate,
    record_progress,
    renew,
    stored_results,
    submit,
    sweep_expired,
)
from jobs.store.records import Job, utc_now
from jobs.store.schema import job_events, jobs, results, tombstones

PROMPT = {"prompt": "a portrait of a lighthouse keeper", "seed": 7}


def count(engine: Engine, table, **where: str) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with engine.connect() as connection:
        return connection.execute(query).scalar_one()


def test_same_key_and_body_return_the_same_job_another_body_conflicts(job_store: Engine) -> None:
    first, created = submit(job_store, PROMPT, idempotency_key="k1", body_hash="h1")
    again, created_again = submit(job_store, PROMPT, idempotency_key="k1", body_hash="h1")
    assert (created, created_again, again.id) == (True, False, first.id)
    with pytest.raises(IdempotencyConflict) as conflict:
        submit(job_store, {"prompt": "something else"}, idempotency_key="k1", body_hash="h2")
    assert conflict.value.job_id == first.id
    other_owner, created = submit(job_store, PROMPT, idempotency_key="k1", body_hash="h2", owner="studio-b")
    assert created and other_owner.id != first.id  # keys are per owner
    assert submit(job_store, PROMPT)[0].id != submit(job_store, PROMPT)[0].id  # no key: a new job each time
    assert count(job_store, jobs) == 4


def test_one_key_sent_at_once_by_many_clients_makes_one_job(job_store: Engine) -> None:
    """Eight submissions with one key at the same moment (as from several balancer hosts): one job, one
    created, seven answered with it (on PostgreSQL the unique constraint decides, not the look-up)."""
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: submit(job_store, PROMPT, idempotency_key="burst", body_hash="h"),
                                range(8)))
    assert len({job.id for job, _ in answers}) == 1
    assert sorted(created for _, created in answers) == [False] * 7 + [True]
    assert count(job_store, jobs) == 1


def queue_position(engine: Engine, job: Job) -> int | None:
    """How many jobs are ahead of ``job`` (``queue_estimate``'s); None when it is not waiting."""
    estimate = queue_estimate(engine, job)
    return None if estimate is None else estimate.ahead


def test_queue_positions_count_the_jobs_ahead_that_no_worker_runs_yet(job_store: Engine) -> None:
    first, second, third = (submit(job_store, PROMPT)[0] for _ in range(3))
    assert [queue_position(job_store, job) for job in (first, second, third)] == [0, 1, 2]
    assert claim_next(job_store, "d1").id == first.id  # claimed, still waiting for a worker
    assert [queue_position(job_store, get(job_store, job.id)) for job in (first, second, third)] == [0, 1, 2]
    record_progress(job_store, first.id, "d1", 0, 8)  # a worker took it (step 0)
    assert queue_position(job_store, get(job_store, first.id)) is None  # running, not waiting
    assert [queue_position(job_store, job) for job in (second, third)] == [0, 1]
    cancel(job_store, second.id)
    assert queue_position(job_store, third) == 0


def test_the_wait_is_the_median_generating_time_of_recent_jobs_per_busy_worker(job_store: Engine) -> None:
    done = [submit(job_store, PROMPT)[0] for _ in range(3)]
    waiting = [submit(job_store, PROMPT)[0] for _ in range(3)]
    assert queue_estimate(job_store, waiting[2]) == QueueEstimate(5, None)  # no job finished: no time yet
    for job, seconds in zip(done, (4, 10, 11), strict=True):
        claim_next(job_store, "d1")
        finish(job_store, job.id, [], generation={"timings": {"generate_ms": seconds * 1000}})
    start = utc_now()
    running = claim_next(job_store, "d1", now=start)
    assert queue_estimate(job_store, waiting[2], now=start) == QueueEstimate(2, 20)  # 2 not started, 10 s each
    record_progress(job_store, running.id, "d1", 0, 8, now=start)
    later = start + timedelta(seconds=4)
    # 1 ahead (10 s) + the running job's 6 s left, one busy worker
    assert queue_estimate(job_store, waiting[2], now=later) == QueueEstimate(1, 16)
    claim_next(job_store, "d2", now=later)
    record_progress(job_store, waiting[1].id, "d2", 0, 8, now=later)
    # nothing ahead; two busy workers with 6 s and 10 s left: about 8 s
    assert queue_estimate(job_store, waiting[2], now=later) == QueueEstimate(0, 8)
    cancel(job_store, waiting[2].id)
    assert queue_estimate(job_store, get(job_store, waiting[2].id)) is None


def test_listing_pages_newest_first_and_later_jobs_shift_nothing(job_store: Engine) -> None:
    made = [submit(job_store, {"n": n})[0].id for n in range(7)]
    submit(job_store, {"n": "elsewhere"}, owner="studio-b")
    first = list_newest_first(job_store, "", limit=3)
    submit(job_store, {"n": "later"})  # accepted while the client pages: not on a later page
    second = list_newest_first(job_store, "", cursor=first.next_cursor, limit=3)
    last = list_newest_first(job_store, "", cursor=second.next_cursor, limit=3)
    assert [[job.id for job in page.jobs] for page in (first, second, last)] == [
        made[6:3:-1], made[3:0:-1], made[0:1]]
    assert last.next_cursor is None and first.next_cursor and second.next_cursor
    with pytest.raises(InvalidCursor):
        list_newest_first(job_store, "", cursor="not-ours")


def test_events_read_after_a_sequence_number(job_store: Engine) -> None:
    job = submit(job_store, PROMPT)[0]
    claim_next(job_store, "d1")
    for step in (1, 2, 3):
        assert record_progress(job_store, job.id, "d1", step, 3) is Lease.HELD
    assert record_progress(job_store, job.id, "someone-else", 4, 3) is Lease.LOST  # records nothing
    finish(job_store, job.id, [Image(b"png", width=1, height=1)])
    everything = events_after(job_store, job.id)
    assert [event.seq for event in everything] == [1, 2, 3, 4, 5, 6]
    assert [event.data.get("status") or event.data["step"] for event in everything] == [
        STARTING, PROCESSING, 1, 2, 3, SUCCEEDED]
    resumed = events_after(job_store, job.id, after=3)  # an SSE client that saw event 3
    assert [(event.seq, event.kind, event.data) for event in resumed] == [
        (4, EVENT_PROGRESS, {"step": 2, "steps": 3}), (5, EVENT_PROGRESS, {"step": 3, "steps": 3}),
        (6, "status", {"status": SUCCEEDED, "results": 1})]
    assert get(job_store, job.id).progress_step == 3


def test_cancel_queued_running_and_abandoned_jobs(job_store: Engine) -> None:
    queued, running, abandoned = (submit(job_store, PROMPT)[0] for _ in range(3))
    assert cancel(job_store, queued.id).status == CANCELED  # never ran: at once
    t0 = utc_now()
    assert claim_next(job_store, "d1", now=t0).id == running.id
    assert claim_next(job_store, "d2", now=t0).id == abandoned.id
    requested = cancel(job_store, running.id, now=t0)
    assert requested.status == PROCESSING and requested.cancel_requested_at is not None
    assert renew(job_store, running.id, "d1", now=t0) is Lease.CANCEL_REQUESTED
    assert mark_canceled(job_store, running.id).written
    assert not finish(job_store, running.id, [Image(b"late")]).written  # a result after the cancel: dropped
    assert stored_results(job_store, running.id) == []
    cancel(job_store, abandoned.id, now=t0)  # its dispatcher d2 dies before it sees the request
    assert claim_next(job_store, "d3", now=t0 + timedelta(seconds=11)) is None  # not claimed: canceled
    assert [get(job_store, job.id).status for job in (queued, running, abandoned)] == [CANCELED] * 3
    assert cancel(job_store, queued.id).status == CANCELED  # a finished job stays as it is
    with pytest.raises(JobNotFound):
        cancel(job_store, "j_nothing")


def test_janitor_deletes_expired_jobs_bytes_and_rows_and_leaves_tombstones(job_store: Engine) -> None:
    t0 = utc_now()
    old = [submit(job_store, PROMPT, retention=timedelta(days=1), now=t0)[0] for _ in range(3)]
    kept = submit(job_store, PROMPT, retention=timedelta(days=30), now=t0)[0]
    for job in [*old, kept]:
        claim_next(job_store, "d1", now=t0)
        finish(job_store, job.id, [Image(bytes(200_000)), Image(bytes(100))], now=t0)
    assert sweep_expired(job_store, now=t0 + timedelta(hours=23)) == 0
    assert sweep_expired(job_store, now=t0 + timedelta(days=2), batch=2) == 3  # two batches
    for job in old:
        with pytest.raises(JobGone):
            get(job_store, job.id)
        assert count(job_store, results, job_id=job.id) == count(job_store, job_events, job_id=job.id) == 0
    assert count(job_store, tombstones) == 3 and count(job_store, jobs) == 1
    assert get(job_store, kept.id).status == SUCCEEDED and len(stored_results(job_store, kept.id)) == 2
    with pytest.raises(JobNotFound):
        get(job_store, "j_never-was")
    assert JobGone.code != JobNotFound.code and EXPIRED == "expired"


def test_the_sqlite_file_gives_deleted_results_back(tmp_path) -> None:
    """SQLite keeps freed pages in its file unless told: the janitor's incremental vacuum returns them."""
    from jobs.store import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    t0 = utc_now()
    for _ in range(5):
        job = submit(engine, PROMPT, retention=timedelta(days=1), now=t0)[0]
        finish(engine, job.id, [Image(bytes(1_000_000))], now=t0)
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    full = (tmp_path / "jobs.sqlite3").stat().st_size
    assert sweep_expired(engine, now=t0 + timedelta(days=2)) == 5
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    assert full > 5_000_000 > 10 * (tmp_path / "jobs.sqlite3").stat().st_size
