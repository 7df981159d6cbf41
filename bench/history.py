"""The studio's History at scale: listing pages of one owner's jobs from stores of 1,000, 10,000 and 100,000
jobs, on SQLite and PostgreSQL, through the real jobs service; and the web front's memory while it lists them.

    python -m bench.history                      # both stores, 1k / 10k / 100k jobs, 30 requests per query
    python -m bench.history --sizes 1000 10000 --samples 20 --stores sqlite

Each store is migrated, then seeded in bulk (rows written straight into the tables, as finished jobs: a tiny
result and thumbnail each, spread over 90 days, 4 presets, owner ``studio``), growing from one size to the
next. ``python -m jobs`` serves it (no worker: nothing is queued) and each query kind is timed over HTTP, a
page of 20 jobs: the newest page, the following pages (cursor), a week's date range, a preset, a prompt text
that 1 job in 10 has, and one that only one job has (the worst case: the whole owner's jobs are read).

The web front's memory: a child process runs the History's own code (``HistoryPanel`` and ``JobsClient``) as
a web front does, first Search and More until the page's cap, then a walk over every page of the whole store
(100 jobs a request), and reports its RSS before and after. Results: ``bench/results/history.md``. Start it
under the cluster lock: it starts a PostgreSQL server and the jobs service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.harness.postgres import PostgresServer
from bench.harness.processes import Processes, free_port
from bench.harness.waiting import wait_http
from bench.report import LatencyStats, fmt_ms, load_averages, machine_summary, markdown_table, write_results

PROG = "python -m bench.history"
OWNER = "studio"
LOGIN = {"Authorization": "Basic c3R1ZGlvOg=="}  # studio:
START = datetime(2026, 9, 1, tzinfo=UTC)
SPAN = timedelta(days=90)
PRESETS = ("ID photo", "Social avatar", "E-commerce model", "Headshot")
PAGE = 20


def seed(url: str, first: int, last: int, batch: int = 5000) -> None:
    """Jobs ``first`` .. ``last - 1`` of the series, finished, each with a tiny result and thumbnail."""
    from sqlalchemy import insert

    from jobs.store import make_engine
    from jobs.store.engine import write
    from jobs.store.schema import jobs, results, thumbnails
    from jobs.store.submissions import new_job_id

    engine = make_engine(url)
    for low in range(first, last, batch):
        job_rows, result_rows, thumb_rows = [], [], []
        for number in range(low, min(low + batch, last)):
            job_id, at = new_job_id(), START + SPAN * (number / 100_000)
            job_rows.append({"id": job_id, "owner": OWNER, "status": "succeeded", "attempts": 1, "last_event_seq": 3,
                             "input": {"prompt": f"portrait {number} of a {('baker', 'pilot', 'poet')[number % 3]}"
                                       + (" in tweed" if number % 10 == 0 else ""), "preset": PRESETS[number % 4],
                                       "width": 512, "height": 640, "steps": 8, "seed": number},
                             "created_at": at, "started_at": at, "completed_at": at, "expires_at": at + SPAN * 4})
            result_rows.append({"job_id": job_id, "role": "output", "index": 0, "sha256": "0" * 64, "size": 100,
                                "media_type": "image/png", "width": 512, "height": 640, "data": b"p" * 100})
            thumb_rows.append({"job_id": job_id, "index": 0, "sha256": "1" * 64, "media_type": "image/webp",
                               "width": 204, "height": 256, "data": b"w" * 100})
        with write(engine) as connection:
            connection.execute(insert(jobs), job_rows)
            connection.execute(insert(results), result_rows)
            connection.execute(insert(thumbnails), thumb_rows)
    engine.dispose()


def queries(size: int) -> dict[str, dict[str, str]]:
    """The query kinds timed (``next`` pages follow the cursor from the newest page)."""
    week = START + SPAN * (size / 2 / 100_000)
    return {"newest page": {}, "next pages (cursor)": {"next": "1"},
            "a week (date range)": {"since": week.isoformat(), "until": (week + timedelta(days=7)).isoformat()},
            "preset": {"preset": PRESETS[1]}, "text in 1 of 10 prompts": {"q": "TWEED"},
            "text in 1 prompt (whole scan)": {"q": f"portrait {size // 2} of"}}


def time_queries(base: str, size: int, samples: int) -> list[tuple[str, LatencyStats]]:
    measured = []
    with httpx.Client(base_url=base, headers=LOGIN, timeout=60) as client:
        for name, query in queries(size).items():
            seconds, following = [], None
            for _ in range(samples):
                path = following if "next" in query and following else "/v1/jobs"
                params = None if path != "/v1/jobs" else {"limit": PAGE, **{k: v for k, v in query.items()
                                                                              if k != "next"}}
                began = time.perf_counter()
                answer = client.get(path, params=params)
                seconds.append(time.perf_counter() - began)
                answer.raise_for_status()
                following = answer.json()["next"] if "next" in query else None
            measured.append((name, LatencyStats.from_seconds(seconds)))
    return measured


@contextmanager
def service(url: str) -> Iterator[str]:
    """``python -m jobs`` on ``url`` (no worker behind it: every job is finished already)."""
    with tempfile.TemporaryDirectory(prefix="history-bench-") as run_dir, Processes("history-bench") as processes:
        port = free_port()
        proc = processes.start(["python", "-m", "jobs", "--store-url", url, "--worker-queue-url",
                                f"http://127.0.0.1:{free_port()}", "--run-dir", run_dir, "--janitor-every", "3600",
                                "--port", str(port)], log_name="history-bench-jobs")
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc, timeout=120)
        yield f"http://127.0.0.1:{port}"


def web_front_memory(base: str) -> dict[str, Any]:
    """In a fresh process: the History's code lists everything, as a web front would; its RSS before and after."""
    done = subprocess.run([sys.executable, "-m", "bench.history", "--web-front", base], capture_output=True,
                          text=True, timeout=1800, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


async def walk_as_web_front(base: str) -> dict[str, Any]:
    import psutil

    from webui.web.jobs_client import JobsClient
    from webui.web.studio.history import HistoryPanel
    from webui.web.studio.history_view import summary

    client = JobsClient(base)
    panel = HistoryPanel(client)
    login = LOGIN["Authorization"]

    class Request:  # what the panel reads of Gradio's request
        headers = {"authorization": login}

    rss = psutil.Process().memory_info().rss
    _cards, listing, more, _note = await panel.search("", None, "", "", Request())  # type: ignore[arg-type]
    while more.visible:
        _cards, listing, more, _note = await panel.more(listing, Request())  # type: ignore[arg-type]
    shown, seen, cursor = len(listing["entries"]), 0, None
    while True:
        page = await client.listing({"limit": "100", **({"cursor": cursor} if cursor else {})}, login)
        seen += len([summary(job) for job in page.jobs])
        if (cursor := page.next_cursor) is None:
            break
    await client.aclose()
    return {"rss_before": rss, "rss_after": psutil.Process().memory_info().rss, "shown": shown, "walked": seen}


def run_store(kind: str, url: str, sizes: list[int], samples: int) -> tuple[list[list[str]], dict[str, Any] | None]:
    from jobs.store import upgrade

    upgrade(url)
    rows, memory, seeded = [], None, 0
    for size in sizes:
        began = time.perf_counter()
        seed(url, seeded, size)
        seeded = size
        print(f"{kind}: {size} jobs seeded in {time.perf_counter() - began:.0f} s", flush=True)
        with service(url) as base:
            for name, stats in time_queries(base, size, samples):
                rows.append([kind, f"{size:,}", name, fmt_ms(stats.median_ms), fmt_ms(stats.p95_ms),
                             fmt_ms(stats.max_ms)])
                print(" | ".join(rows[-1]), flush=True)
            if size == sizes[-1] and kind == "SQLite":
                memory = web_front_memory(base)
    return rows, memory


def main() -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--samples", type=int, default=30, help="requests per query kind and size")
    parser.add_argument("--stores", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--web-front", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.web_front:
        print(json.dumps(asyncio.run(walk_as_web_front(args.web_front))))
        return
    loads, rows, memory = [os.getloadavg()], [], None
    if "sqlite" in args.stores:
        with tempfile.TemporaryDirectory(prefix="history-sqlite-") as folder:
            found, memory = run_store("SQLite", f"sqlite:///{Path(folder) / 'jobs.sqlite3'}", args.sizes, args.samples)
            rows += found
    if "postgresql" in args.stores:
        with PostgresServer() as server:
            rows += run_store("PostgreSQL", server.create_database(), args.sizes, args.samples)[0]
    loads.append(os.getloadavg())
    report(args, rows, memory, loads)


def report(args: argparse.Namespace, rows: list[list[str]], memory: dict[str, Any] | None,
           loads: list[tuple[float, ...]]) -> None:
    lines = ["# History listing at scale", "",
             f"`{PROG} --sizes {' '.join(map(str, args.sizes))} --samples {args.samples}`. {machine_summary()}.", "",
             f"A page is {PAGE} jobs of one owner, over HTTP from the jobs service (uvicorn, one process), "
             f"{args.samples} requests per row, one at a time.", "",
             markdown_table(["store", "jobs", "query", "p50 ms", "p95 ms", "max ms"], rows), ""]
    if memory:
        mib = 1024 * 1024
        lines += [f"Web front memory (the History's code in its own process): RSS {memory['rss_before'] / mib:.1f} "
                  f"MiB before, {memory['rss_after'] / mib:.1f} MiB after showing {memory['shown']} cards (Search, "
                  f"then More to the page's cap) and walking all {memory['walked']:,} jobs, 100 a request.", ""]
    lines += [load_averages(loads) + ".", "", "PostgreSQL here is a test server (`fsync=off`); reads are what is "
              "timed, so that changes little. Seeded results and thumbnails are 100 bytes each: a listing reads "
              "their descriptions, never their bytes."]
    print("\n".join(lines))
    write_results("history", "\n".join(lines), None)


if __name__ == "__main__":
    main()
