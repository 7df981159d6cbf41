"""What recording a synchronous generation as a job costs: ``POST /generate`` straight to a stand-in worker vs.
through the jobs service (``python -m jobs``), and to a worker that records its job at a jobs service itself
(``--jobs-url``, what the cluster does by default), each on SQLite and on PostgreSQL, in the same run.

    python -m bench.sync_jobs                          # 200 rounds, stand-in 0.2 s, 512x512, one client
    python -m bench.sync_jobs --rounds 300 --latency 0.2 --size 1024

One stand-in worker (``--model standin:LATENCY``: the model's time fixed) and two jobs services in front of it
(SQLite in a temporary file, ``synchronous = FULL``; PostgreSQL from ``bench.harness.postgres``, ``fsync=off``),
and two more stand-in workers that record their jobs at those services (the balancer's mark set by the client).
One client sends one job at a time, round-robin over the five paths (the load is one job in flight; the load
average is recorded). Each request: the same job with its own seed, ``Prefer: return=minimal``, a kept-alive
connection. Then the parts of the difference are timed in-process: the store's two transactions for one job
(``submit_held``, ``finish`` with the worker's PNG) and the result's JSON handling (parse the worker's result
line, decode the PNG, render the answer). Results: ``bench/results/sync-jobs.md``. Start it under the cluster lock.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.harness.postgres import PostgresServer
from bench.harness.processes import Processes, free_port
from bench.harness.waiting import wait_http
from bench.report import LatencyStats, load_averages, machine_summary, markdown_table, publish
from jobs.running import stored_images
from jobs.store import finish, make_engine, submit_held, upgrade
from webui.contract import RECORD_JOB_HEADER
from webui.schema import GenerationResult, ResultEvent
from webui.trace import JOB_ID_HEADER

PROG = "python -m bench.sync_jobs"
MINIMAL = {"Prefer": "return=minimal"}
NOTES = ("Order on the jobs service's path: the job is recorded (`submit_held`) while the worker is already asked, "
         "so that transaction is off the client's wait (the answer waits only for it to commit); the result is "
         "written (`finish`, with the last step; the thumbnail is made at its first read) before the answer is "
         "sent, with the answer rendered meanwhile. The rest of \"p50 "
         "added\" is the extra HTTP hop: the jobs service's own request (uvicorn, routing, the worker's checks), its "
         "request to the worker's `/generate/stream` (progress lines, then the result line with the base64 PNG, "
         "parsed), the answer sent once more over loopback, with client, worker and service sharing the machine's "
         "cores. PostgreSQL is a test server with `fsync=off`; it stores the PNG uncompressed out of line "
         "(`STORAGE EXTERNAL`, store revision 0004). \"Worker recording its job\" is the cluster's default path "
         "(docs/jobs.md): "
         "the client's request goes to the worker, which records the job at a jobs service beside the generation, "
         "answers once the record is in (it is, long before the 200 ms end), and sends the result after its answer, "
         "off the client's wait (not holding the connection's next request); what it adds is that work sharing the "
         "cores with the next request.")


def start(processes: Processes, args: list[str], name: str) -> str:
    port = free_port()
    proc = processes.start([*args, "--port", str(port)], log_name=name)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + ("/readyz" if "webui.worker" in args else "/healthz"), proc=proc, timeout=120)
    return url


def timed(client: httpx.Client, job: dict[str, object]) -> float:
    began = time.perf_counter()
    answer = client.post("/generate", json=job, headers=MINIMAL)
    elapsed = time.perf_counter() - began
    if answer.status_code != 200:
        raise RuntimeError(f"{client.base_url}: HTTP {answer.status_code}: {answer.text[:300]}")
    return elapsed


def in_process(action: Callable[[], object], rounds: int) -> LatencyStats:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return LatencyStats.from_seconds(times)


def row(name: str, stats: LatencyStats, base: LatencyStats | None = None) -> list[str]:
    added = "" if base is None else f"{stats.median_ms - base.median_ms:+.1f}"
    return [name, str(stats.count), f"{stats.median_ms:.1f}", f"{stats.p95_ms:.1f}", f"{stats.p99_ms:.1f}",
            f"{stats.max_ms:.1f}", added]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="jobs per path (default 200)")
    parser.add_argument("--latency", type=float, default=0.2, help="the stand-in's seconds per job (default 0.2)")
    parser.add_argument("--size", type=int, default=512, help="width and height of each image (default 512)")
    args = parser.parse_args(argv)
    job = {"prompt": "a studio portrait", "width": args.size, "height": args.size, "steps": 8}
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="sync-jobs-") as folder, PostgresServer() as server, \
            Processes("bench-sync-jobs") as processes:
        stores = {"SQLite": f"sqlite:///{Path(folder) / 'jobs.sqlite3'}", "PostgreSQL": server.create_database()}
        standin = ["python", "-m", "webui.worker", "--model", f"standin:{args.latency}", "--warmup-steps", "1",
                   "--queue-size", "0"]
        worker = start(processes, standin, "bench-worker")
        paths = {"worker (direct)": worker}
        recording: dict[str, str] = {}
        for name, url in stores.items():
            service = start(processes, [
                "python", "-m", "jobs", "--store-url", url, "--worker-queue-url", worker, "--run-dir", folder,
                "--janitor-every", "3600"], f"bench-jobs-{name}")
            paths[f"jobs service, {name}"] = service
            recording[f"worker recording its job, {name}"] = start(processes, [
                *standin, "--jobs-url", service], f"bench-recording-worker-{name}")
        clients = {name: httpx.Client(base_url=url, timeout=60) for name, url in paths.items()}
        clients.update({name: httpx.Client(base_url=url, timeout=60, headers={RECORD_JOB_HEADER: "1"})
                        for name, url in recording.items()})
        for client in clients.values():  # warm-up: connections, caches, the workers' /info
            for seed in range(5):
                timed(client, {**job, "seed": seed})
        for name in [*recording, *(name for name in paths if name.startswith("jobs service"))]:
            if JOB_ID_HEADER not in clients[name].post("/generate", json=job, headers=MINIMAL).headers:
                raise RuntimeError(f"{name}: the answer names no job")
        times: dict[str, list[float]] = {name: [] for name in clients}
        for n in range(args.rounds):
            for name, client in clients.items():
                times[name].append(timed(client, {**job, "seed": 1000 + n}))
        loads.append(os.getloadavg())
        line = clients["worker (direct)"].post("/generate/stream", json={**job, "seed": 1}, headers=MINIMAL)
        result_line = line.text.splitlines()[-1]
        for client in clients.values():
            client.close()
        stats = {name: LatencyStats.from_seconds(values) for name, values in times.items()}
        base = stats["worker (direct)"]
        parts = []
        result = ResultEvent.model_validate_json(result_line).result
        for name, url in stores.items():
            upgrade(url)
            engine = make_engine(url)
            held = [submit_held(engine, job, "bench") for _ in range(args.rounds)]
            parts.append(row(f"{name}: submit_held (recorded and held, while the worker is asked)", in_process(
                lambda e=engine: submit_held(e, job, "bench"), args.rounds)))
            parts.append(row(f"{name}: finish (decode, SHA-256, store the PNG; before the answer is sent)", in_process(
                lambda e=engine, h=held: finish(e, h.pop().id, stored_images(result), thumbnails=False),
                args.rounds)))
            engine.dispose()
        parts.append(row("JSON: parse the result line, decode the PNG, render the answer",
                         in_process(lambda: json_handling(result_line), args.rounds)))
    png_kb = len(base64.b64decode(result.images[0])) / 1024
    publish("sync-jobs", [
        "# Synchronous generations as jobs: what recording each one costs",
        f"`{PROG} --rounds {args.rounds} --latency {args.latency:g} --size {args.size}`. {machine_summary()}.",
        f"## POST /generate, one client, one job in flight (ms; stand-in {args.latency * 1000:.0f} ms a job, "
        f"{args.size}x{args.size}, PNG {png_kb:.0f} kB, `Prefer: return=minimal`)",
        markdown_table(["path", "jobs", "p50", "p95", "p99", "max", "p50 added"],
                       [row(name, value, None if value is base else base) for name, value in stats.items()]),
        "## Where the added time goes (in-process, ms per job)",
        markdown_table(["part", "runs", "p50", "p95", "p99", "max", ""], parts),
        NOTES,
        load_averages(loads),
    ])
    return 0


def json_handling(line: str) -> str:
    """What the jobs service does with a worker's result besides storing it."""
    result: GenerationResult = ResultEvent.model_validate_json(line).result
    stored_images(result)
    return result.model_dump_json(exclude={"image"})


if __name__ == "__main__":
    raise SystemExit(main())
