"""What a waiting job's place costs the store: ``queue_estimate`` (jobs ahead, about how long) behind 10,000 jobs.

    python -m bench.queue_estimate                 # SQLite and PostgreSQL, 10,000 queued jobs
    python -m bench.queue_estimate --queued 10000 --calls 200 --backends sqlite

Each backend gets a fresh, migrated store (``bench.jobs_store``'s): ``RECENT`` succeeded jobs with their worker's
generating time, ``--queued`` queued jobs (one bulk insert), two of them claimed and running on a worker. The
place of the last queued job (every other one is ahead of it: the most rows the count reads) is asked ``--calls``
times; the query plan of the count is printed. Every SSE stream of a waiting job asks at most once a second.
Start it under the cluster lock: it starts a PostgreSQL server.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

from sqlalchemy import Engine, func, insert, select, text

from bench.jobs_store import postgres_store, sqlite_store
from bench.report import LatencyStats
from jobs.contract import STARTING
from jobs.store import claim_next, finish, get, queue_estimate, record_progress, submit
from jobs.store.queue import RECENT, _not_started_before
from jobs.store.records import utc_now
from jobs.store.schema import jobs

PROMPT = {"prompt": "a portrait of a lighthouse keeper at dusk", "seed": 1234}


def fill(engine: Engine, queued: int) -> str:
    """``RECENT`` finished jobs, ``queued`` queued ones (two of them running); the id of the last one."""
    for seconds in range(RECENT):
        job = submit(engine, PROMPT)[0]
        claim_next(engine, "bench")
        finish(engine, job.id, [], generation={"timings": {"generate_ms": 8000 + seconds * 100}})
    now = utc_now()
    rows = [{"id": f"j_bench{n:017d}", "owner": "", "status": STARTING, "input": PROMPT, "created_at": now,
             "expires_at": now + timedelta(days=30), "attempts": 0, "last_event_seq": 0} for n in range(queued)]
    with engine.begin() as connection:
        connection.execute(insert(jobs), rows)
    for _ in range(2):
        running = claim_next(engine, "bench")
        record_progress(engine, running.id, "bench", 0, 8)
    return rows[-1]["id"]


def plan(engine: Engine, job_id: str) -> str:
    """The query plans of the counts of the jobs ahead."""
    job = get(engine, job_id)
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    lines = []
    with engine.connect() as connection:
        for condition in _not_started_before(job.seq, utc_now()):
            count = select(func.count()).select_from(jobs).where(condition)
            compiled = count.compile(engine, compile_kwargs={"literal_binds": True})
            lines += [" ".join(map(str, row)) for row in connection.execute(text(explain + str(compiled)))]
    return "\n".join(lines)


def measure(name: str, engine: Engine, queued: int, calls: int) -> None:
    last = fill(engine, queued)
    job = get(engine, last)
    estimate = queue_estimate(engine, job)
    seconds = []
    for _ in range(calls):
        began = time.perf_counter()
        queue_estimate(engine, job)
        seconds.append(time.perf_counter() - began)
    stats = LatencyStats.from_seconds(seconds)
    print(f"{name}: {queued} queued, last job's place {estimate}; queue_estimate median {stats.median_ms:.2f} ms, "
          f"p99 {stats.p99_ms:.2f} ms over {calls} calls")
    print(plan(engine, last))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_estimate", description=__doc__.split("\n")[0])
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    options = parser.parse_args()
    for backend in options.backends:
        with (sqlite_store() if backend == "sqlite" else postgres_store()) as (_, engine, _path):
            measure(backend, engine, options.queued, options.calls)


if __name__ == "__main__":
    main()
