"""The web front against a real worker: gradio_client calls, seeds, errors, retouch, readiness.

One worker (the fixed-latency stand-in, ``--model standin:SECONDS``: the subject is the web front, not the
model's pixels; its images are still real, seed-keyed PNGs; out-of-memory fault armed for prompts
containing ``[oom]``) and one web front run for the whole module; the readiness test starts its own
pair because it stops the worker.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from balancer.haproxy.process import find_haproxy
from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import CallFailed, Job
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.processes import Processes, free_port, kill_tree
from bench.harness.waiting import wait_http
from tests.helpers import blank_png, peak_rss, reset_peak_rss
from webui.contract import FAULT_OOM_AT_STEP, FAULT_PROMPT_MARKER, MAX_UPLOAD_PIXELS
from webui.web.app import main as web_main
from webui.web.studio.config import CUSTOM, StudioConfig, load_examples, load_studio_config
from webui.web.studio.form_fields import api_seed, ui_seed
from webui.web.studio.handlers import Studio
from webui.web.studio.info import model_note
from webui.web.studio.photos import encode_photo
from webui.web.studio.preset_choice import FIELDS, choose_preset
from webui.web.studio.sizes import snap
from webui.web.worker_client import WorkerClient, WorkerInfoCache
from webui.web.worker_errors import WorkersUnavailable
from webui.worker.pipelines.standin import STANDIN_MODEL

OOM_MARKER = "[oom]"
MODEL = "standin:0.05"
"""The module worker's model: 0.05 s a job."""
SUB_PATH_PROXY = """\
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s

frontend public
    bind 127.0.0.1:{haproxy_port}
    http-request redirect location /studio/ if {{ path /studio }}
    http-request replace-path /studio/?(.*) /\\1 if {{ path_beg /studio/ }}
    default_backend web

backend web
    server front 127.0.0.1:{web_port}
"""
"""HAProxy serving a web front under /studio (the front runs with --root-path /studio)."""


@dataclass
class Node:
    """A worker and the web front in front of it."""

    worker_url: str
    web_url: str
    worker_id: str
    node_id: str
    worker: object
    front: object


def start_node(group: Processes, name: str, worker_env: dict[str, str] | None = None,
               worker_args: tuple[str, ...] = ()) -> Node:
    """Start a worker and a web front pointing at it; wait until both answer."""
    worker_port, web_port = free_port(), free_port()
    worker_id, node_id = f"{name}-worker", f"{name}-front"
    worker = group.start(
        ["python", "-m", "webui.worker", "--port", str(worker_port), "--node", worker_id, *worker_args],
        env=worker_env, log_name=f"{name}-worker",
    )
    worker_url = f"http://127.0.0.1:{worker_port}"
    front = group.start(
        ["python", "-m", "webui.web", "--port", str(web_port), "--worker-queue", worker_url,
         "--node", node_id, "--retry-delay", "0.1"],
        log_name=f"{name}-front",
    )
    web_url = f"http://127.0.0.1:{web_port}"
    wait_http(f"{worker_url}/readyz", proc=worker, timeout=180)
    wait_http(f"{web_url}/healthz", proc=front, timeout=120)
    return Node(worker_url, web_url, worker_id, node_id, worker, front)


@pytest.fixture(scope="module")
def node():
    with Processes("web") as group:
        yield start_node(group, "web", {FAULT_OOM_AT_STEP: "1", FAULT_PROMPT_MARKER: OOM_MARKER},
                         ("--model", MODEL))


@pytest.fixture(scope="module")
def client(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(node.web_url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def generate(client: Client, **params) -> tuple[list[dict], dict]:
    params.setdefault("prompt", "studio portrait, soft light")
    params.setdefault("steps", 2)
    return client.predict(**params, api_name="/generate")


def pixels(item: dict) -> np.ndarray:
    with Image.open(item["image"]) as image:
        return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------------------- client API
def test_generate_returns_images_and_info(client: Client, node: Node) -> None:
    gallery, info = generate(client, width=512, height=384, seed=1234, num_images=2)

    assert len(gallery) == 2
    for item in gallery:
        with Image.open(item["image"]) as image:
            assert image.size == (512, 384)
    assert info["seed"] == 1234
    assert (info["width"], info["height"], info["steps"], info["num_images"]) == (512, 384, 2, 2)
    assert info["worker_id"] == node.worker_id
    assert info["web_node"] == node.node_id
    assert info["model"] == STANDIN_MODEL
    assert info["attempts"] == 1
    assert info["timings"]["web_ms"] >= info["timings"]["generate_ms"] > 0


def test_same_seed_gives_same_image(client: Client) -> None:
    first, info1 = generate(client, width=256, height=256, seed=77)
    second, info2 = generate(client, width=256, height=256, seed=77)
    other, _ = generate(client, width=256, height=256, seed=78)

    assert info1["seed"] == info2["seed"] == 77
    np.testing.assert_array_equal(pixels(first[0]), pixels(second[0]))
    assert not np.array_equal(pixels(first[0]), pixels(other[0]))


def test_an_event_stream_with_no_job_here_ends_with_an_error_at_once(client: Client, node: Node) -> None:
    """A data stream of a session this web front knows but holds no job of (its job was joined on another web
    front: the balancer switched servers between the join and the stream) gets one error event and its end,
    as Gradio answers an unknown session, not heartbeats for ever (a gradio_client waited on them without end)."""
    generate(client, seed=7)  # the session is known here now, its job delivered
    with httpx.stream("GET", f"{node.web_url}/gradio_api/queue/data", params={"session_hash": client.session_hash},
                      timeout=10) as stream:
        events = [json.loads(line.removeprefix("data:")) for line in stream.iter_lines() if line.startswith("data:")]

    assert [event["msg"] for event in events] == ["unexpected_error"]
    assert events[0]["session_not_found"] and "another" in events[0]["message"]


def test_a_stream_opened_for_a_join_already_delivered_on_the_previous_stream_is_served(node: Node) -> None:
    """The page opens a data stream after a join's answer unless its stream is open then. A stream opened for one
    join delivers every event of the session, and closes once none is left: another join's event, delivered and
    gone, while the page had not read that join's answer yet (a fast event, a busy browser; test_studio_history's
    page once lost every later event so). The stream the page opens for that answer has no job here and is still
    the page's own: it is served, and carries the page's next event."""
    page = BrowserProtocolClient(node.web_url, api_name="generate")

    def messages(stream: httpx.Response) -> Iterator[tuple[str, str | None]]:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                yield message["msg"], message.get("event_id")

    data = {"session_hash": page.session_hash}
    try:
        joined = [page.join(Job("a stream after its join", steps=1, width=256, height=256, seed=seed))
                  for seed in (21, 22)]
        with page.http.stream("GET", "/gradio_api/queue/data", params=data) as stream:  # for the first answer
            first = list(messages(stream))
        with page.http.stream("GET", "/gradio_api/queue/data", params=data) as stream:  # the second answer read
            next_job = page.join(Job("the page's next event", steps=1, width=256, height=256, seed=23))
            second = []
            for message in messages(stream):
                second.append(message)
                if message[0] in ("process_completed", "close_stream", "unexpected_error"):
                    break
    finally:
        page.close()

    assert sorted(event for msg, event in first if msg == "process_completed") == sorted(joined), first
    assert first[-1] == ("close_stream", None), first
    assert second[-1] == ("process_completed", next_job), second


def test_the_harness_gradio_client_gives_up_on_a_call_after_its_timeout(node: Node, tmp_path: Path) -> None:
    """A load's gradio_client call that gets no result in time is a failed call with a reason (one hung for ever on
    a stream of heartbeats and ran into the test's timeout); the client goes on with a fresh session."""
    api = GradioApiClient(node.web_url, download_dir=tmp_path, call_timeout=0.01)  # the stand-in sleeps 0.05 s
    try:
        with pytest.raises(CallFailed, match="no result within 0.01 s"):
            api.generate(Job("slow", steps=2, width=256, height=256, seed=3))
        api.call_timeout = 120
        reply = api.generate(Job("next", steps=2, width=256, height=256, seed=4))
    finally:
        api.close()

    assert reply.seed == 4


def test_the_benchmarks_split_clients_draw_the_same_image(node: Node, tmp_path: Path) -> None:
    """bench.serving's (e) and (f): gradio_client with one TLS context, and the queue protocol spoken directly."""
    job = Job("studio portrait, soft light", steps=2, width=256, height=256, seed=4242)
    queue_protocol = BrowserProtocolClient(node.web_url, api_name="generate")
    one_tls = GradioApiClient(node.web_url, download_dir=tmp_path, tls_context=httpx.create_ssl_context())
    try:
        replies = [queue_protocol.generate(job), one_tls.generate(job), one_tls.generate(job)]
    finally:
        queue_protocol.close()
        one_tls.close()
    assert {reply.seed for reply in replies} == {4242}
    assert replies[0].progress_events > 0
    assert len({reply.pixels_sha256 for reply in replies}) == 1


def test_random_seed_is_reported_and_reproducible(client: Client) -> None:
    gallery, info = generate(client, width=256, height=256)  # seed -1: random
    assert 0 <= info["seed"] < 2**32
    again, _ = generate(client, width=256, height=256, seed=info["seed"])
    np.testing.assert_array_equal(pixels(gallery[0]), pixels(again[0]))


def test_model_defaults_fill_missing_parameters(client: Client) -> None:
    _, info = client.predict(prompt="portrait", width=256, height=256, api_name="/generate")
    assert info["steps"] == 8  # Z-Image-Turbo's default
    assert info["guidance"] == 0.0


def test_bad_width_names_the_field(client: Client) -> None:
    with pytest.raises(AppError) as caught:
        generate(client, width=1000, height=512)
    message = str(caught.value)
    assert re.search(r"width.*multiple of 16", message), message
    assert "Traceback" not in message


def test_empty_prompt_is_rejected_with_its_field(client: Client) -> None:
    with pytest.raises(AppError) as caught:
        client.predict(prompt="", api_name="/generate")
    assert "prompt" in str(caught.value)


def test_out_of_memory_is_not_retried(client: Client, node: Node) -> None:
    with pytest.raises(AppError) as caught:
        generate(client, prompt=f"portrait {OOM_MARKER}", width=256, height=256)
    message = str(caught.value)
    assert "out of memory" in message and "lower the resolution" in message
    assert "attempts" not in message  # answered at once, not after retries
    log = Path(node.front.log_path).read_text()
    assert "retrying" not in log


def test_retouch_keeps_the_photos_size(client: Client, tmp_path: Path) -> None:
    """The API's ``/retouch`` keeps the photo's size as the page does (640×480: multiples of 16, within limits)."""
    ramp = np.linspace(0, 255, 640, dtype=np.uint8)
    photo = np.stack([np.tile(ramp, (480, 1)), np.tile(ramp[::-1], (480, 1)), np.full((480, 640), 90, np.uint8)], -1)
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)

    gallery, info = client.predict(handle_file(str(path)), prompt="retouched portrait", strength=0.5, steps=2,
                                   seed=5, api_name="/retouch")

    assert info["mode"] == "retouch" and info["strength"] == 0.5
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (info["width"], info["height"]) == (640, 480)


@pytest.mark.timeout(120)
def test_retouch_refuses_a_pixel_bomb_before_decoding(client: Client, node: Node, tmp_path: Path) -> None:
    bomb = blank_png(tmp_path / "bomb.png", 12000, 12000)  # 144 million pixels in a few hundred KB
    before = reset_peak_rss(node.front.pid)

    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(bomb)), prompt="retouched portrait", steps=2, api_name="/retouch")

    growth = peak_rss(node.front.pid) - before
    message = str(caught.value)
    assert message.startswith("image: ") and f"more than the {MAX_UPLOAD_PIXELS}-pixel limit" in message, message
    assert "/" not in message and "Traceback" not in message  # no server path
    assert growth < 100 * 2**20, f"the web front's peak memory grew by {growth >> 20} MiB: it decoded the image"


def test_web_front_runs_the_cache_janitor(node: Node) -> None:
    log = Path(node.front.log_path).read_text()
    assert re.search(r"cache janitor: keeping \S+ under 2147483648 bytes on disk, 50000 inodes and 3600 s, "
                     r"sweeping every 60 s", log), log


def test_page_served_under_a_sub_path_behind_haproxy(node: Node, processes: Processes, tmp_path: Path) -> None:
    haproxy_port, web_port = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(SUB_PATH_PROXY.format(haproxy_port=haproxy_port, web_port=web_port))
    front = processes.start(
        ["python", "-m", "webui.web", "--port", str(web_port), "--worker-queue", node.worker_url,
         "--node", "sub-path-front", "--root-path", "/studio"],
        log_name="sub-path-front",
    )
    processes.start([find_haproxy(), "-db", "-f", str(config)], log_name="sub-path-haproxy")
    public = f"http://127.0.0.1:{haproxy_port}/studio"
    wait_http(f"{public}/readyz", proc=front, timeout=120)

    assert httpx.get(f"{public}/config").json()["root"] == public
    client = Client(f"{public}/", verbose=False, download_files=str(tmp_path))
    gallery, info = generate(client, width=256, height=256, seed=3)
    assert info["web_node"] == "sub-path-front"
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (256, 256)


# ---------------------------------------------------------------------------- worker client
@pytest.fixture(scope="module")
def tight_worker():
    """A worker that queues nothing: a second concurrent job gets 503 busy with Retry-After (it serves the
    fixed-latency stand-in, not a model: 0.5 s a job, the subject is the web front's retry)."""
    with Processes("tight") as group:
        port = free_port()
        proc = group.start(["python", "-m", "webui.worker", "--port", str(port), "--node", "tight-worker",
                            "--queue-size", "0", "--model", "standin:0.5"], log_name="tight-worker")
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", proc=proc, timeout=180)
        yield url


def test_busy_worker_is_retried_after_its_retry_after(tight_worker: str) -> None:
    causes: list[str] = []

    async def two_jobs():
        # Enough attempts to outlast the first job even on a loaded machine (each waits Retry-After >= 1 s).
        client = WorkerClient(tight_worker, max_attempts=20, retry_delay=0.2, timeout=120)
        try:
            job = {"prompt": "portrait", "width": 256, "height": 256, "steps": 4}
            return await asyncio.gather(*(
                client.generate({**job, "seed": seed}, on_retry=lambda attempt, most, cause: causes.append(cause))
                for seed in (1, 2)
            ))
        finally:
            await client.aclose()

    first, second = asyncio.run(two_jobs())
    assert sorted([first.attempts, second.attempts])[0] == 1
    assert max(first.attempts, second.attempts) >= 2
    assert (first.result.seed, second.result.seed) == (1, 2)  # a retry keeps its seed
    assert causes and all("HTTP 503" in cause for cause in causes)


def test_unreachable_worker_gives_one_clear_error() -> None:
    async def job():
        client = WorkerClient(f"http://127.0.0.1:{free_port()}", max_attempts=3, retry_delay=0.01, timeout=5)
        try:
            return await client.generate({"prompt": "portrait"})
        finally:
            await client.aclose()

    with pytest.raises(WorkersUnavailable, match=r"^No worker could finish the job after 3 attempts: connection"):
        asyncio.run(job())


# ---------------------------------------------------------------------------- health routes
def test_healthz_and_readyz_with_a_worker(node: Node) -> None:
    assert httpx.get(f"{node.web_url}/healthz").json() == {"status": "ok", "node": node.node_id}
    response = httpx.get(f"{node.web_url}/readyz")
    assert response.status_code == 200
    assert response.json()["ready"] is True


def load_page(worker_url: str, max_images: int = 4) -> tuple:
    """What the studio page gets on load from the workers at ``worker_url`` (``Studio.page_load``)."""
    async def load() -> tuple:
        client = WorkerClient(worker_url)
        try:
            studio = Studio(client, WorkerInfoCache(client), "test-front", Path("/nonexistent"), max_images=max_images)
            return await studio.page_load()
        finally:
            await client.aclose()

    return asyncio.run(load())


def test_the_page_offers_what_the_workers_model_accepts(node: Node) -> None:
    info = httpx.get(f"{node.worker_url}/info").json()
    assert info["limits"]["family"] == "z-image" and info["defaults"]["steps"] == 8
    note, steps, guidance, width, height, images = load_page(node.worker_url, max_images=2)
    assert f"**{STANDIN_MODEL}**" in note
    assert (steps.value, steps.maximum, guidance.value) == (8, info["limits"]["max_steps"], 0.0)
    assert width.step == height.step == 16  # Z-Image sizes are multiples of 16 (a 264 would be refused)
    assert width.maximum == info["limits"]["max_side"]
    assert images.maximum == 2  # this front's own cap, below the worker's 4
    page = httpx.get(f"{node.web_url}/config").json()
    sliders = {c["props"].get("elem_id"): c["props"] for c in page["components"]}
    assert sliders["width"]["step"] == sliders["height"]["step"] == 16  # before any worker answered too


def test_the_model_note_warns_that_the_demo_model_draws_no_faces() -> None:
    demo = model_note("demo", "front")
    assert demo.startswith("Model: **demo** · node `front`") and "not faces" in demo
    assert "not faces" not in model_note(STANDIN_MODEL, "front")


def test_a_typed_size_is_rounded_to_the_models_multiple_as_the_slider_shows_it() -> None:
    assert [snap(size, 16) for size in (520 - 9, 522, 528, 535, 536)] == [512, 528, 528, 528, 544]
    assert snap(1021, 8) == 1024  # SDXL's multiple


def test_web_front_stays_ready_without_workers_and_the_page_says_so(processes: Processes) -> None:
    own = start_node(processes, "readyz", worker_args=("--model", "standin:0"))  # killed at once: no model needed
    kill_tree(own.worker.pid)
    own.worker.wait(timeout=10)
    for _ in range(5):  # its readiness is its own: HAProxy keeps serving the page
        assert httpx.get(f"{own.web_url}/readyz").json() == {"ready": True, "node": own.node_id}
    note, *sliders = load_page(own.worker_url)
    assert note.startswith("**No worker is ready yet**") and "unreachable" in note
    assert all(update == gr.skip() for update in sliders)  # the sliders keep what the page started with
    assert httpx.get(f"{own.web_url}/healthz").status_code == 200


# ---------------------------------------------------------------------------- studio config
def test_presets_and_examples_load() -> None:
    config = load_studio_config()
    assert {"ID photo", "Social avatar", "E-commerce model"} <= {p.name for p in config.presets}
    assert config.resolutions["Portrait 768×1024"] == (768, 1024)
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in config.resolutions.values())
    assert len(load_examples()) >= 3


def test_preset_fills_prompt_and_parameters() -> None:
    config = load_studio_config()
    blank = dict.fromkeys(FIELDS)
    values = choose_preset(config, "ID photo", "an old sailor", blank, None).values
    prompt, negative, resolution, width, height = (values[key] for key in FIELDS[:5])
    assert "an old sailor" in prompt and "{subject}" not in prompt
    assert negative and resolution == "Portrait 768×1024" and (width, height) == (768, 1024)
    default_subject = choose_preset(config, "ID photo", "  ", blank, None).values["prompt"]
    assert config.preset("ID photo").subject in default_subject


def test_unknown_resolution_in_presets_is_rejected() -> None:
    data = load_studio_config().model_dump()
    data["presets"][0]["resolution"] = "Panorama"
    with pytest.raises(ValueError, match="Panorama"):
        StudioConfig.model_validate(data)


def test_resolution_name_and_seed_conventions() -> None:
    config = load_studio_config()
    assert config.resolution_name(1024, 768) == "Landscape 1024×768"
    assert config.resolution_name(1000, 768) == CUSTOM
    assert api_seed(-1) is None and api_seed(5.0) == 5
    assert ui_seed(9, randomize=True) is None and ui_seed(9.0, randomize=False) == 9


def test_retouch_upload_is_scaled_down() -> None:
    encoded = encode_photo(Image.new("RGB", (3000, 2000), "gray"), max_side=1536)
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        assert image.format == "JPEG" and image.size == (1536, 1024)


def test_invalid_setting_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert web_main(["--port", "abc", "--max-attempts", "0"]) == 2
    err = capsys.readouterr().err
    assert "port:" in err and "max_attempts:" in err and "'abc'" in err
    assert "Traceback" not in err


def test_the_job_event_indices_haproxy_counts_are_the_pages_job_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """HAProxy counts a ``queue/join`` as a generation by its ``fn_index`` (``JOB_EVENT_INDICES``): they must be
    exactly the page's queued events that run a job, whatever order the layout registers them in."""
    from starlette.routing import Mount

    from webui.contract import JOB_EVENT_INDICES
    from webui.settings import WebSettings
    from webui.web.app import create_app

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # create_app sets PIL's guard for all
    app = create_app(WebSettings(worker_queue="http://127.0.0.1:9", node="layout"))
    demo = next(route.app for route in app.routes if isinstance(route, Mount)).get_blocks()
    handlers = {"ui_generate", "ui_retouch", "api_generate", "api_retouch"}
    jobs = {index for index, function in demo.fns.items() if function.name in handlers}
    assert len(jobs) == len(handlers)
    assert all(demo.fns[index].queue for index in jobs)
    assert jobs == set(JOB_EVENT_INDICES)
