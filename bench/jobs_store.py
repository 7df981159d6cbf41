"""The job store under load: submit -> ack latency at a steady rate, and the store's size per 1,000 finished jobs.

    python -m bench.jobs_store                         # SQLite and PostgreSQL, 50 submissions/s for 10 s each
    python -m bench.jobs_store --rate 50 --seconds 10 --jobs 1000 --png-kb 500

Each backend gets a fresh, migrated store: SQLite in a temporary file (WAL, ``synchronous = FULL``: each
commit reaches the disk), PostgreSQL as a real server (``bench.harness.postgres``: ``fsync=off``, so its
figures leave out the disk flush SQLite's include). Submissions are sent open-loop at ``--rate`` per second
from ``--threads`` threads; an ack is ``submit`` returning (the job recorded and committed). Then ``--jobs``
jobs are submitted, claimed and finished with a random-noise PNG of about ``--png-kb`` kB (incompressible,
like a photo's), and the store's bytes on disk are reported per 1,000 jobs: the SQLite file after a WAL
checkpoint, ``pg_database_size`` (tables, TOAST, indexes; not the WAL). Results: ``bench/results/jobs-store.md``.
Start it under the cluster lock: it starts a PostgreSQL server.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import Engine, text

from bench.harness.postgres import PostgresServer
from bench.report import LatencyStats, load_averages, machine_summary, markdown_table, publish
from jobs.store import Image, claim_next, finish, make_engine, submit, upgrade

PROG = "python -m bench.jobs_store"
NOTES = ("PostgreSQL here is a test server with `fsync=off`: its acks leave out the disk flush that SQLite's "
         "(`synchronous = FULL`) include; a production PostgreSQL adds its commit flush. Bytes on disk: the SQLite "
         "file's allocated blocks after a WAL checkpoint; PostgreSQL's `pg_database_size` (heap, TOAST, indexes; "
         "not its WAL). They include each job's row and its events (status changes), not only the PNG.")
PROMPT = {"prompt": "a portrait of a lighthouse keeper at dusk", "seed": 1234, "steps": 30, "size": 1024}


def noise_png(kilobytes: int) -> tuple[bytes, int]:
    """A PNG of random pixels of about ``kilobytes`` kB (random data does not compress) and its side."""
    side = int((kilobytes * 1024 / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, format="PNG")
    return out.getvalue(), side


@contextmanager
def sqlite_store() -> Iterator[tuple[str, Engine, Path]]:
    with tempfile.TemporaryDirectory(prefix="jobs-bench-") as folder:
        url = f"sqlite:///{Path(folder) / 'jobs.sqlite3'}"
        upgrade(url)
        engine = make_engine(url)
        yield url, engine, Path(folder) / "jobs.sqlite3"
        engine.dispose()


@contextmanager
def postgres_store() -> Iterator[tuple[str, Engine, None]]:
    with PostgresServer() as server:
        url = server.create_database()
        upgrade(url)
        engine = make_engine(url)
        yield url, engine, None
        engine.dispose()


def submit_latencies(engine: Engine, rate: float, seconds: float, threads: int) -> list[float]:
    """Seconds each ``submit`` took, sent open-loop at ``rate`` per second for ``seconds``."""
    count = int(rate * seconds)
    start = time.perf_counter() + 0.2

    def one(n: int) -> float:
        time.sleep(max(0.0, start + n / rate - time.perf_counter()))
        began = time.perf_counter()
        submit(engine, {**PROMPT, "n": n}, idempotency_key=f"bench-{n}", body_hash=f"{n:064x}")
        return time.perf_counter() - began

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def store_bytes(engine: Engine, sqlite_file: Path | None) -> int:
    """The store's bytes on disk: the SQLite file (after a WAL checkpoint), or PostgreSQL's database size."""
    with engine.connect() as connection:
        if sqlite_file is not None:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            return sqlite_file.stat().st_blocks * 512
        return connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one()


def fill(engine: Engine, jobs: int, png: bytes, side: int) -> None:
    """Submit, claim and finish ``jobs`` jobs, each with ``png`` as its one result."""
    for n in range(jobs):
        submit(engine, {**PROMPT, "n": n})
        job = claim_next(engine, "bench")
        finish(engine, job.id, [Image(png, width=side, height=side)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="submissions per second (default 50)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to submit, per backend (default 10)")
    parser.add_argument("--threads", type=int, default=8, help="submitting threads (default 8)")
    parser.add_argument("--jobs", type=int, default=1000, help="finished jobs for the size figure (default 1000)")
    parser.add_argument("--png-kb", type=int, default=500, help="each result's PNG size in kB (default 500)")
    args = parser.parse_args(argv)
    png, side = noise_png(args.png_kb)
    loads, latency_rows, size_rows = [os.getloadavg()], [], []
    for name, store in (("SQLite", sqlite_store), ("PostgreSQL", postgres_store)):
        with store() as (_, engine, sqlite_file):
            stats = LatencyStats.from_seconds(submit_latencies(engine, args.rate, args.seconds, args.threads))
            loads.append(os.getloadavg())
            latency_rows.append([name, stats.count, f"{stats.median_ms:.1f}", f"{stats.p95_ms:.1f}",
                                 f"{stats.p99_ms:.1f}", f"{stats.max_ms:.1f}", f"{loads[-1][0]:.2f}"])
            empty = store_bytes(engine, sqlite_file)
            began = time.perf_counter()
            fill(engine, args.jobs, png, side)
            elapsed = time.perf_counter() - began
            grown = store_bytes(engine, sqlite_file) - empty
            per_thousand = grown * 1000 / args.jobs
            size_rows.append([name, args.jobs, f"{len(png) / 1e6:.3f}", f"{grown / 1e6:.1f}",
                              f"{per_thousand / 1e6:.1f}", f"{per_thousand / (len(png) * 1000):.3f}",
                              f"{args.jobs / elapsed:.0f}"])
    publish("jobs-store", [
        "# Job store: submit -> ack, and size per 1,000 finished jobs",
        f"`{PROG} --rate {args.rate:g} --seconds {args.seconds:g} --threads {args.threads} --jobs {args.jobs} "
        f"--png-kb {args.png_kb}`. {machine_summary()}.",
        f"## Submit -> ack at {args.rate:g} submissions/s for {args.seconds:g} s (ms; the job recorded and committed)",
        markdown_table(["store", "submissions", "p50", "p95", "p99", "max", "load (1 min) after"], latency_rows),
        "## Bytes on disk per 1,000 finished jobs (one PNG result each)",
        markdown_table(["store", "jobs", "PNG MB", "store grew MB", "MB per 1,000 jobs", "× the PNG bytes",
                        "jobs finished/s"], size_rows),
        NOTES,
        load_averages(loads),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
