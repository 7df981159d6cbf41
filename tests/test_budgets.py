"""The edge's budgets: per-job cost at the worker, files per upload, bounded and rotated logs.

One small cluster (``launch.py``, one node, the fixed-latency stand-in worker with a budget of
1 megapixel-step, logs rotated past 64 KiB) serves the process tests; the budget's default
sizing, the part counter, the log rotation and the access line's format are also tested in-process.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx
import pytest

from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.processes import Processes
from tests.suite_cluster import suite_options
from webui.access_log import MAX_LOGGED_PATH, PathOnlyAccessFormatter, uvicorn_log_config
from webui.schema import EffectiveParams, Limits
from webui.web.studio.config import load_studio_config
from webui.web.upload_limit import PartCounter
from webui.worker.job_cost import check_cost, megapixel_steps
from webui.worker.job_parsing import ApiError
from webui.worker.pipelines.sources import FAMILY_DEFAULTS

pytestmark = pytest.mark.timeout(120)

LOG_MAX_BYTES = 64 * 1024
UPLOAD_MAX_FILES = 4
SECRET = "q8Z3secret0session"
"""A session hash that must never reach a log."""


def params(width: int, height: int, steps: int, num_images: int, strength: float | None = None) -> EffectiveParams:
    return EffectiveParams(prompt="p", negative_prompt="", steps=steps, guidance=0.0, width=width, height=height,
                           seed=1, lora_scale=1.0, num_images=num_images,
                           mode="text2img" if strength is None else "retouch", strength=strength)


# --- in-process ------------------------------------------------------------------------------


def test_default_budget_takes_the_studio_presets_but_not_the_largest_job() -> None:
    limits, config = Limits(), load_studio_config()
    steps = {config.defaults.steps, *(defaults.steps for defaults in FAMILY_DEFAULTS.values())}  # 8 and SDXL's 30
    largest = max(config.resolutions.values(), key=lambda size: size[0] * size[1])
    for preset in config.presets:  # what a preset leaves out keeps the page's value: the largest counted
        width, height = config.resolutions[preset.resolution] if preset.resolution else largest
        for count in steps:
            check_cost(params(width, height, preset.steps or count, preset.num_images or 4), limits)

    with pytest.raises(ApiError) as refused:
        check_cost(params(2048, 2048, limits.max_steps, limits.max_images), limits)
    error = refused.value
    assert error.status == 422 and error.body.error == "job_too_large"
    assert [field["field"] for field in error.body.fields] == ["steps", "num_images", "width", "height"]
    assert "1678 megapixel-steps" in error.body.detail and "at most 512" in error.body.detail
    assert "4 images of 2048x2048 pixels at 100 steps" in error.body.detail
    assert "fewer steps, fewer images or a smaller size: e.g. 30 steps, or 1 image, or about 1120x1120 pixels" \
        in error.body.detail


def test_a_retouch_costs_the_steps_it_runs() -> None:
    limits = Limits(max_megapixel_steps=10)
    check_cost(params(1024, 1024, 16, 1, strength=0.5), limits)  # runs 8 of its 16 steps: 8.39
    with pytest.raises(ApiError, match="at 16 steps is 16.8 megapixel-steps"):  # all 16 run
        check_cost(params(1024, 1024, 16, 1), limits)
    retouch = r"at 40 steps \(20 run at strength 0\.5\) is 21 megapixel-steps.* e\.g\. 18 steps, or about 704x704"
    with pytest.raises(ApiError, match=retouch):  # asks 40, runs 20; 18 asked would run 9
        check_cost(params(1024, 1024, 40, 1, strength=0.5), limits)
    assert megapixel_steps(params(1000, 1000, 10, 2)) == 20.0


def test_part_counter_sees_delimiters_across_chunks() -> None:
    body = b"".join(b"--XYZ\r\ncontent-disposition: form-data\r\n\r\nx\r\n" for _ in range(3)) + b"--XYZ--\r\n"
    counter = PartCounter(b"--XYZ")
    for index in range(0, len(body), 3):  # every delimiter split over two or three chunks
        counter.feed(body[index:index + 3])
    assert counter.count == 4


def test_an_unknown_log_format_logs_as_text_and_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """``PORTRAIT_LOG_FORMAT=yaml``: the part warns and logs text lines (uvicorn's too), it does not stop."""
    monkeypatch.setenv("PORTRAIT_LOG_FORMAT", "yaml")
    assert uvicorn_log_config()["formatters"]["access"]["()"] is PathOnlyAccessFormatter


def test_access_line_has_no_query_and_a_bounded_path() -> None:
    settings = uvicorn_log_config()["formatters"]["access"]
    formatter = settings["()"](fmt=settings["fmt"], max_path=settings["max_path"], use_colors=False)
    long_path = "/gradio_api/" + "a" * 5000

    def line(path: str, status: int) -> str:
        args = ("127.0.0.1:1", "GET", path, "1.1", status)
        record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)
        return formatter.format(record)

    long_line = line(f"{long_path}?session_hash={SECRET}", 404)
    data_line = line(f"/queue/data?session_hash={SECRET}", 200)
    assert SECRET not in long_line + data_line
    assert f'"GET {long_path[:MAX_LOGGED_PATH - 3]}... HTTP/1.1" 404' in long_line
    assert '"GET /queue/data HTTP/1.1" 200' in data_line


def test_log_rotation_copies_empties_and_keeps_a_bounded_number(tmp_path: Path) -> None:
    from balancer.supervision.log_rotation import LogRotation
    from balancer.system.run_dir import open_private_log

    log = tmp_path / "node1-web.log"
    rotation = LogRotation(lambda: [log, tmp_path / "missing.log"], max_bytes=1000, keep=2, interval=60)
    with open_private_log(log) as child:  # a child's stdout: appends, never reopened
        for round_ in range(4):
            child.write(f"round {round_}\n".encode() * 200)
            child.flush()
            assert rotation.sweep() == [log]
            assert log.stat().st_size == 0
        child.write(b"after\n")
        child.flush()
        assert rotation.sweep() == []

    assert log.read_bytes() == b"after\n"  # the child's next write lands at the start of the emptied file
    assert sorted(path.name for path in tmp_path.iterdir()) == ["node1-web.log", "node1-web.log.1", "node1-web.log.2"]
    assert (tmp_path / "node1-web.log.1").read_bytes() == b"round 3\n" * 200
    assert (tmp_path / "node1-web.log.2").read_bytes() == b"round 2\n" * 200
    assert os.stat(tmp_path / "node1-web.log.1").st_mode & 0o777 == 0o600


# --- one cluster -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("budgets")
    options = suite_options(
        model="standin:0.3", nodes=1, dispatch_agent=False, worker_args=["--max-megapixel-steps", "1"],
        web_args=["--upload-max-files", str(UPLOAD_MAX_FILES)],
        sidecar={"log_max_bytes": LOG_MAX_BYTES, "log_keep": 2, "log_check_interval": 0.2},
    )
    with Processes("budgets") as processes:
        launched = LaunchedCluster(options, name="budgets", processes=processes, run_dir=run_dir)
        launched.start()
        launched.wait_all_ready(timeout=120)
        yield launched


def test_a_rest_job_over_the_budget_gets_a_422_and_one_within_runs(cluster: LaunchedCluster) -> None:
    with httpx.Client(base_url=cluster.public_url, timeout=60) as rest:
        over = rest.post("/generate", json={"prompt": "a portrait", "width": 256, "height": 256, "steps": 8,
                                            "num_images": 2})
        within = rest.post("/generate", json={"prompt": "a portrait", "width": 256, "height": 256, "steps": 8})

    assert over.status_code == 422, over.text[:300]
    body = over.json()
    assert body["error"] == "job_too_large" and {"steps", "num_images", "width", "height"} <= {
        field["field"] for field in body["fields"]}
    assert body["detail"] == (
        "This job is too large: 2 images of 256x256 pixels at 8 steps is 1.05 megapixel-steps, and this worker "
        "takes at most 1 per job. Use fewer steps, fewer images or a smaller size: e.g. 7 steps, or 1 image, or "
        "about 240x240 pixels.")
    assert within.status_code == 200, within.text[:300]
    assert len(within.json()["images"]) == 1


def multipart_files(count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"tiny{index}.txt", b"0123456789abcdef", "text/plain")) for index in range(count)]


def test_an_upload_of_too_many_files_is_refused_and_leaves_nothing(cluster: LaunchedCluster) -> None:
    cache = cluster.run_dir / "gradio" / "node1"
    before = sum(1 for _ in cache.rglob("*"))
    with httpx.Client(base_url=cluster.part_url("node1", "web"), headers=cluster.internal_headers, timeout=30) as web:
        refused = web.post("/gradio_api/upload", files=multipart_files(UPLOAD_MAX_FILES + 1))
        after_refused = sum(1 for _ in cache.rglob("*"))
        taken = web.post("/gradio_api/upload", files=multipart_files(UPLOAD_MAX_FILES))

    assert refused.status_code == 413, refused.text[:300]
    assert refused.json() == {"error": "too_many_files", "fields": [],
                              "detail": f"files: at most {UPLOAD_MAX_FILES} files per upload; send fewer at a time."}
    assert after_refused == before
    assert taken.status_code == 200 and len(taken.json()) == UPLOAD_MAX_FILES


def test_web_front_log_keeps_no_query_and_rotates_at_its_size(cluster: LaunchedCluster) -> None:
    logs = cluster.run_dir / "logs"
    long_path = "/gradio_api/" + "x" * 3000
    with httpx.Client(base_url=cluster.part_url("node1", "web"), headers=cluster.internal_headers, timeout=30) as web:
        for index in range(400):  # about 100 kB of access lines, well past LOG_MAX_BYTES
            web.get(f"{long_path}{index}?session_hash={SECRET}&upload_id={SECRET}")
    with httpx.Client(base_url=cluster.public_url, timeout=30) as public:  # and through HAProxy
        for index in range(3):
            public.get(f"{long_path}{index}?session_hash={SECRET}")
    haproxy_log = cluster.run_dir / "haproxy.log"
    wait_for(lambda: haproxy_log.read_text(errors="replace").count("/gradio_api/xxx") >= 3, "HAProxy's log lines")
    rotated = logs / "node1-web.log.1"
    wait_for(lambda: rotated.exists(), "node1-web.log to be rotated")

    texts = [path.read_text(errors="replace") for path in sorted(logs.glob("node1-web.log*"))]
    assert sorted(path.name for path in logs.glob("node1-web.log*")) <= ["node1-web.log", "node1-web.log.1",
                                                                           "node1-web.log.2"]
    assert all(SECRET not in text for text in texts)
    assert rotated.stat().st_size > LOG_MAX_BYTES
    balanced = [line for line in haproxy_log.read_text().splitlines() if "/gradio_api/xxx" in line]
    assert SECRET not in "".join(balanced) and all(len(line) < 600 for line in balanced), balanced
    access = [line for text in texts for line in text.splitlines() if "/gradio_api/xxx" in line]
    assert len(access) >= 100 and all(f'"GET {long_path[:MAX_LOGGED_PATH - 3]}... HTTP/1.1" 404' in line
                                      for line in access)


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
