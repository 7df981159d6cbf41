"""A job that no worker ran before its deadline fails in the web front's own words (``WorkersUnavailable``:
"No worker could finish the job after N attempts: <cause>"), so the page and gradio_client say the same
whether the web front ran the job itself or the jobs service did. A real connection to a closed port."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from bench.harness.processes import free_port
from jobs.running import DeadlinePassed, run_until_deadline
from webui.web.worker_client import WorkerClient


def test_no_worker_before_the_deadline_reads_as_the_worker_path_s_error() -> None:
    async def run() -> None:
        client = WorkerClient(f"http://127.0.0.1:{free_port()}", max_attempts=2, retry_delay=0.05)
        try:
            await run_until_deadline(client, {"prompt": "a portrait", "seed": 3}, time.monotonic() + 1.0)
        finally:
            await client.aclose()

    with pytest.raises(DeadlinePassed) as failed:
        asyncio.run(run())
    words = str(failed.value)
    match = re.match(r"No worker could finish the job after (\d+) attempts: connection to the worker failed", words)
    assert match and int(match[1]) >= 2, words
