"""Fair share under a flood: three accounts with weights 1/1/2 keep the queue full for a minute; the GPU time
each one got, measured from the store's claim and completion times.

    python -m bench.fair_share                            # 60 s, 2 stand-in workers of 0.3 s, 20 queued each
    python -m bench.fair_share --seconds 120 --latency 0.5 --workers 3

The cluster: ``--workers`` stand-in workers (``--model standin:LATENCY``: a fixed time per job), each behind its
own jobs service (``python -m jobs``, one dispatch slot), all on one SQLite store: dispatchers on several hosts
sharing one store, as in production. Each account's client submits through its API key (round-robin over the
services) whenever fewer than ``--backlog`` of its jobs wait, so all three always have jobs queued. GPU time is
each job's claim-to-completion time, clipped to the measured minute. Results: ``bench/results/fair-share.md``.
Start it under the cluster lock.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select

from bench.harness.processes import Processes
from bench.report import load_averages, machine_summary, markdown_table, publish
from bench.sync_jobs import start
from jobs.contract import STARTING
from jobs.store import create_account, create_key, make_engine, set_weight, upgrade
from jobs.store.records import utc_now
from jobs.store.schema import jobs

PROG = "python -m bench.fair_share"
WEIGHTS = {"studio-a": 1.0, "studio-b": 1.0, "app-c": 2.0}
JOB = {"prompt": "a studio portrait", "width": 64, "height": 64, "steps": 8}
SLICES = 4
"""The measured time is also cut in this many slices, to show the shares hold throughout, not only on average."""




def flood(engine: Engine, services: list[str], owner: str, key: str, backlog: int, stop: threading.Event,
          submitted: dict[str, int]) -> None:
    """Keep ``backlog`` of ``owner``'s jobs queued until ``stop``."""
    clients = [httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"})
               for url in services]
    count = select(func.count()).select_from(jobs).where(jobs.c.owner == owner, jobs.c.status == STARTING)
    n = 0
    while not stop.is_set():
        with engine.connect() as connection:
            waiting = connection.execute(count).scalar_one()
        for _ in range(backlog - waiting):
            answer = clients[n % len(clients)].post("/v1/jobs", json={**JOB, "seed": n})
            answer.raise_for_status()
            n += 1
        stop.wait(0.05)
    submitted[owner] = n
    for client in clients:
        client.close()


def gpu_seconds(engine: Engine, owner: str, start: datetime, end: datetime) -> tuple[float, int]:
    """``owner``'s claim-to-completion seconds within [start, end], and its jobs completed then."""
    with engine.connect() as connection:
        rows = connection.execute(select(jobs.c.started_at, jobs.c.completed_at).where(
            jobs.c.owner == owner, jobs.c.started_at.is_not(None), jobs.c.started_at < end)).all()
    total, done = 0.0, 0
    for began, ended in rows:
        ended = ended or end
        total += max(0.0, (min(ended, end) - max(began, start)).total_seconds())
        done += start <= ended < end
    return total, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the flood is measured (default 60)")
    parser.add_argument("--latency", type=float, default=0.3, help="the stand-in's seconds per job (default 0.3)")
    parser.add_argument("--workers", type=int, default=2, help="stand-in workers, one jobs service each (default 2)")
    parser.add_argument("--backlog", type=int, default=20, help="jobs each account keeps queued (default 20)")
    args = parser.parse_args(argv)
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="fair-share-") as folder, Processes("bench-fair-share") as processes:
        url = f"sqlite:///{Path(folder) / 'jobs.sqlite3'}"
        upgrade(url)
        engine = make_engine(url)
        keys = {}
        for name, weight in WEIGHTS.items():
            owner = create_account(engine, name).id
            set_weight(engine, name, weight)
            keys[owner] = create_key(engine, name, ["generate"])[1]
        services = []
        for n in range(args.workers):
            worker = start(processes, ["python", "-m", "webui.worker", "--model", f"standin:{args.latency}",
                                       "--warmup-steps", "1", "--queue-size", "0", "--node", f"w{n}"], f"worker-{n}")
            services.append(start(processes, ["python", "-m", "jobs", "--store-url", url, "--worker-queue-url",
                                              worker, "--run-dir", str(Path(folder) / f"run-{n}"),
                                              "--janitor-every", "3600"], f"jobs-{n}"))
        stop, submitted = threading.Event(), {}
        threads = [threading.Thread(target=flood, args=(engine, services, owner, key, args.backlog, stop, submitted))
                   for owner, key in keys.items()]
        began = utc_now()
        for thread in threads:
            thread.start()
        time.sleep(args.seconds)
        ended = utc_now()
        stop.set()
        for thread in threads:
            thread.join()
        loads.append(os.getloadavg())
        names = dict(zip(keys, WEIGHTS, strict=True))
        whole = {owner: gpu_seconds(engine, owner, began, ended) for owner in keys}
        step = (ended - began) / SLICES
        slices = [{owner: gpu_seconds(engine, owner, began + step * k, began + step * (k + 1))[0] for owner in keys}
                  for k in range(SLICES)]
        engine.dispose()
    total = sum(seconds for seconds, _ in whole.values())
    weights = sum(WEIGHTS.values())
    rows = [(names[owner], f"{WEIGHTS[names[owner]]:g}", f"{100 * WEIGHTS[names[owner]] / weights:.1f} %",
             f"{seconds:.1f}", f"{100 * seconds / total:.1f} %", done, submitted[owner])
            for owner, (seconds, done) in whole.items()]
    slice_rows = [(f"{step.total_seconds() * k:.0f}–{step.total_seconds() * (k + 1):.0f} s",
                   *(f"{100 * part[owner] / max(sum(part.values()), 1e-9):.1f} %" for owner in keys))
                  for k, part in enumerate(slices)]
    publish("fair-share", [
        "# Fair share: GPU time of three flooding accounts, weights 1/1/2",
        f"`{PROG} --seconds {args.seconds:g} --latency {args.latency:g} --workers {args.workers} "
        f"--backlog {args.backlog}`. {machine_summary()}.",
        f"Load: {args.workers} stand-in workers ({args.latency * 1000:.0f} ms a job), each behind its own jobs "
        f"service (one dispatch slot), all on one SQLite store; each account keeps {args.backlog} jobs queued "
        f"through its API key for {args.seconds:g} s. GPU time: claim to completion, clipped to the minute "
        f"(capacity {args.workers * args.seconds:.0f} worker-seconds).",
        markdown_table(["account", "weight", "target", "GPU s", "measured", "jobs done", "submitted"], rows),
        f"## The shares in {SLICES} slices of the run",
        markdown_table(["slice", *(names[owner] for owner in keys)], slice_rows),
        load_averages(loads),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
