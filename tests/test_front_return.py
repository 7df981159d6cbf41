"""A web front that comes back: results any front serves (``webui.web.job_files``), and an event loop kept free for
HAProxy's checks (``webui.web.loop_health``), in process. The cluster-level proof is in ``tests/test_hosts.py``."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from webui.web.job_files import JobResultFiles, foreign_result, result_name
from webui.web.jobs_client import JobsError
from webui.web.loop_health import LoopWatch

JOB = "j_" + "A" * 20 + "-_"
PNG = b"\x89PNG\r\n\x1a\nresult"


class StoredResults:
    """The jobs client's ``result`` over a dict (the jobs service itself is tested in tests/test_jobs_api.py)."""

    def __init__(self, results: dict[tuple[str, int], bytes]) -> None:
        self.results, self.asked = results, []

    async def result(self, job_id: str, index: int, login: str | None = None) -> bytes:
        self.asked.append((job_id, index))
        if (job_id, index) not in self.results:
            raise JobsError(f"The job {job_id} is not known to the jobs service.", 404)
        return self.results[job_id, index]


def test_a_result_file_outside_this_fronts_cache_names_its_job(tmp_path: Path) -> None:
    own = tmp_path / "n1" / "gradio" / "node1"
    other = tmp_path / "n2" / "gradio" / "node2" / "1e7b" / result_name(JOB, 1)
    assert result_name(JOB, 1) == f"portrait-{JOB}-2.png"
    assert foreign_result(f"/gradio_api/file={other}", own) == (JOB, 1)
    assert foreign_result(f"/gradio_api/file={own / 'ab' / result_name(JOB, 0)}", own) is None  # Gradio's own
    assert foreign_result(f"/gradio_api/file={tmp_path / 'x' / 'photo.png'}", own) is None  # not a result
    assert foreign_result(f"/gradio_api/file={tmp_path / 'x' / 'portrait-j_short-1.png'}", own) is None
    assert foreign_result("/gradio_api/upload", own) is None


def test_any_front_serves_another_fronts_result_from_the_job_store(tmp_path: Path) -> None:
    own = tmp_path / "node1"
    own.mkdir()
    app = FastAPI()

    @app.get("/{rest:path}")
    async def gradio(rest: str) -> dict[str, str]:  # stands for Gradio's routes: what the middleware lets through
        return {"served by": "gradio"}

    store = StoredResults({(JOB, 0): PNG})
    app.add_middleware(JobResultFiles, jobs=store, cache_dir=own)

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://front") as client:
            return await client.get(path)

    other = tmp_path / "node2" / "abc"
    found = asyncio.run(get(f"/gradio_api/file={other / result_name(JOB, 0)}"))
    assert (found.status_code, found.headers["content-type"], found.content) == (200, "image/png", PNG)
    missing = asyncio.run(get(f"/gradio_api/file={other / result_name(JOB, 3)}"))
    assert missing.status_code == 404 and missing.json()["error"] == "not found" and missing.json()["fields"] == []
    assert asyncio.run(get(f"/gradio_api/file={own / 'abc' / result_name(JOB, 0)}")).json() == {"served by": "gradio"}
    assert store.asked == [(JOB, 0), (JOB, 3)]


def test_a_blocked_event_loop_is_logged_with_where_it_was(caplog: pytest.LogCaptureFixture) -> None:
    async def block() -> None:
        watch = LoopWatch(threshold=0.2)
        watch.start()
        await asyncio.sleep(0.3)
        time.sleep(0.6)  # the blocking call the warning must name
        await asyncio.sleep(0.5)
        await watch.stop()

    with caplog.at_level(logging.WARNING, logger="webui.web.loop_health"):
        asyncio.run(block())
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "time.sleep(0.6)" in warnings[0], warnings


def test_the_web_front_resolves_gradios_matplotlib_backend_without_pyplot() -> None:
    """Gradio asks matplotlib for its backend at every call; once settled, that imports nothing (pyplot took
    0.5 s and more inside the event loop at a front's first call)."""
    pytest.importorskip("matplotlib")
    code = ("import sys; from webui.web.loop_health import settle_matplotlib; settle_matplotlib(); "
            "from gradio.utils import MatplotlibBackendMananger\n"
            "with MatplotlibBackendMananger(): pass\n"
            "print('matplotlib.pyplot' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.strip() == "False", done.stderr[-2000:]
