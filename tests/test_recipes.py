"""Every image carries its recipe, and has its own seed: made again alone, it has the same pixels.

In process, with the real demo model on the CPU: the worker's app (``TestClient``, the model loads as in a worker),
the jobs API's ``POST /v1/recipes``, and the studio page's restore handler.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from gradio import Blocks
from PIL import Image
from starlette.testclient import TestClient

from jobs.api import JobsApi
from jobs.api import create_app as create_jobs_app
from jobs.contract import MAX_RECIPE_PNG_BYTES, RECIPES_PATH
from jobs.store import make_engine
from webui.recipe import (
    AI_GENERATED_KEY,
    DIGITAL_SOURCE_TYPE_KEY,
    TRAINED_ALGORITHMIC_MEDIA,
    read_recipe,
    remake_fields,
)
from webui.schema import GenerationResult
from webui.settings import WorkerSettings
from webui.web.studio.config import CUSTOM
from webui.worker.app import create_app
from webui.worker.pipelines.weights_hash import WeightHashes

JOB = {"prompt": "a portrait in soft light", "negative_prompt": "blurry", "width": 128, "height": 128, "steps": 2,
       "guidance": 1.5, "lora_scale": 0.7}
"""Small, with classifier-free guidance (a batch of two per denoising step) and the demo LoRA at a scale."""
MAX_PNG = 8 * 1024 * 1024
WAIT = 120.0
"""Bound (seconds) on the demo model's load and warm-up."""


@pytest.fixture(scope="module")
def worker(demo_model_dir: Path) -> Iterator[TestClient]:
    """The worker's app in process, serving the demo model on the CPU."""
    settings = WorkerSettings(model="demo", worker_id="recipes", device="cpu", warmup_steps=1)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + WAIT
        while not client.get("/readyz").json()["ready"]:  # the model loads and warms up in the background
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.1)
        yield client


def generate(worker: TestClient, **fields: object) -> dict:
    response = worker.post("/generate", json={**JOB, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def png(data: str) -> bytes:
    return base64.b64decode(data)


def pixels(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png(data))).convert("RGB"))


@pytest.fixture(scope="module")
def batch(worker: TestClient) -> dict:
    """A batch of four images from seed 4242."""
    return generate(worker, seed=4242, num_images=4)


def test_each_image_has_its_own_seed_and_makes_itself_again_alone(worker, batch):
    """Image 3 of a batch of 4, made again from its PNG's recipe as a one-image job: the same pixels."""
    assert batch["seed"] == 4242 and batch["seeds"] == [4242, 4243, 4244, 4245]
    third = read_recipe(png(batch["images"][2]), MAX_PNG)
    assert (third.seed, third.batch_index, third.batch_size) == (4244, 2, 4)
    again = generate(worker, **remake_fields(third))
    assert again["seeds"] == [4244]
    assert np.array_equal(pixels(again["images"][0]), pixels(batch["images"][2]))


def test_the_first_image_does_not_depend_on_the_batch_size(worker, batch):
    one = generate(worker, seed=4242, num_images=1)
    assert np.array_equal(pixels(one["images"][0]), pixels(batch["images"][0]))
    assert not np.array_equal(pixels(batch["images"][0]), pixels(batch["images"][1]))


def test_a_png_carries_its_full_recipe_and_says_it_is_ai_generated(worker, demo_model_dir):
    result = generate(worker, seed=5)
    with Image.open(io.BytesIO(png(result["images"][0]))) as image:
        text = dict(image.text)
    assert text[AI_GENERATED_KEY] == "true" and text[DIGITAL_SOURCE_TYPE_KEY] == TRAINED_ALGORITHMIC_MEDIA
    recipe = read_recipe(png(result["images"][0]), MAX_PNG)
    assert recipe.model_dump(include=set(JOB)) == JOB
    assert (recipe.seed, recipe.mode, recipe.model, recipe.scheduler) == (5, "text2img", "demo",
                                                                         "FlowMatchEulerDiscreteScheduler")
    assert recipe.diffusers_version and recipe.torch_version and recipe.input_sha256 is None
    assert (recipe.device, recipe.dtype) == ("cpu", "float32")
    lora_file = demo_model_dir / "lora" / "pytorch_lora_weights.safetensors"
    [lora] = recipe.loras
    assert (lora.name, lora.sha256, lora.scale) == ("lora", hashlib.sha256(lora_file.read_bytes()).hexdigest(), 0.7)
    assert len(recipe.model_sha256 or "") == 64


def test_a_retouch_recipe_names_its_photo_by_sha256(worker):
    photo = io.BytesIO()
    Image.new("RGB", (128, 128), (200, 120, 90)).save(photo, format="PNG")
    sent = base64.b64encode(photo.getvalue()).decode()
    result = generate(worker, seed=8, init_image=sent, strength=0.5)
    recipe = read_recipe(png(result["images"][0]), MAX_PNG)
    assert recipe.input_sha256 == hashlib.sha256(photo.getvalue()).hexdigest()
    assert (recipe.mode, recipe.strength, remake_fields(recipe)["strength"]) == ("retouch", 0.5, 0.5)


@pytest.fixture(scope="module")
def jobs_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The jobs service's API in process (``POST /v1/recipes`` stores nothing: the store stays empty)."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('jobs') / 'jobs.db'}")
    with TestClient(create_jobs_app(JobsApi(engine))) as client:
        yield client
    engine.dispose()


def test_the_api_reads_a_pngs_recipe_and_the_job_that_makes_it_again(jobs_api, worker, batch):
    answer = jobs_api.post(RECIPES_PATH, content=png(batch["images"][1]), headers={"Content-Type": "image/png"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body == {**read_recipe(png(batch["images"][1]), MAX_PNG).model_dump(mode="json"), "remake": body["remake"]}
    assert (body["seed"], body["batch_index"], body["prompt"]) == (4243, 1, JOB["prompt"])
    again = generate(worker, **body["remake"])
    assert np.array_equal(pixels(again["images"][0]), pixels(batch["images"][1]))


def test_the_api_refuses_what_is_not_a_png_with_a_recipe_in_words(jobs_api):
    plain = io.BytesIO()
    Image.new("RGB", (64, 64)).save(plain, format="PNG")
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64)).save(jpeg, format="JPEG")
    cases = [(jpeg.getvalue(), 415, "not_png"), (b"hello", 415, "not_png"), (plain.getvalue(), 422, "no_recipe"),
             (b"\x89PNG\r\n\x1a\n" + b"x" * MAX_RECIPE_PNG_BYTES, 413, "body_too_large")]
    for content, status, error in cases:
        answer = jobs_api.post(RECIPES_PATH, content=content, headers={"Content-Type": "image/png"})
        assert (answer.status_code, answer.json()["error"]) == (status, error), answer.text
        assert set(answer.json()) == {"error", "detail", "fields"} and "Traceback" not in answer.text
    assert "no portrait-ha recipe" in jobs_api.post(RECIPES_PATH, content=plain.getvalue()).json()["detail"]


@pytest.fixture(scope="module")
def studio_page() -> Blocks:
    """The web front's studio page (``gr.Blocks``), built as the web front builds it; no worker behind it."""
    from starlette.routing import Mount

    from webui.settings import WebSettings
    from webui.web.app import create_app as create_web_app

    guard = Image.MAX_IMAGE_PIXELS
    app = create_web_app(WebSettings(worker_queue="http://127.0.0.1:9", node="recipes"))
    Image.MAX_IMAGE_PIXELS = guard  # create_app sets PIL's guard for the whole process
    return next(route.app for route in app.routes if isinstance(route, Mount)).get_blocks()


def page_event(page: Blocks, name: str) -> tuple[Callable[..., tuple], list[str]]:
    """The page's event handler named ``name`` and the ``elem_id`` of each of its outputs."""
    [function] = [function for function in page.fns.values() if function.name == name]
    return function.fn, [output.elem_id for output in function.outputs]


def test_dropping_a_png_on_the_page_restores_the_form_to_make_that_image_again(studio_page, batch, tmp_path):
    restore, outputs = page_event(studio_page, "restore")
    dropped = tmp_path / "portrait.png"
    dropped.write_bytes(png(batch["images"][3]))
    values = dict(zip(outputs, restore(str(dropped)), strict=True))
    assert values == {
        "prompt": JOB["prompt"], "negative-prompt": JOB["negative_prompt"], "steps": 2, "guidance": 1.5,
        "width": 128, "height": 128, "seed": 4245, "seed-random": False, "lora-scale": 0.7, "num-images": 1,
        "strength": values["strength"], "resolution": CUSTOM, "recipe-note": values["recipe-note"],
    }
    assert "#4 of 4" in values["recipe-note"] and "4245" in values["recipe-note"]


def test_the_page_says_why_a_png_without_a_recipe_restores_nothing(studio_page, tmp_path):
    restore, outputs = page_event(studio_page, "restore")
    plain = tmp_path / "photo.png"
    Image.new("RGB", (64, 64)).save(plain)
    with pytest.warns(UserWarning, match="no portrait-ha recipe"):  # gr.Warning outside a request: a warning
        values = dict(zip(outputs, restore(str(plain)), strict=True))
    assert "no portrait-ha recipe" in values.pop("recipe-note")
    assert all(isinstance(value, dict) and value.get("__type__") == "update" for value in values.values()), values


def test_the_gallery_captions_each_image_with_its_own_seed(batch):
    """The page's captions and info (worker and jobs paths alike), also for a result kept before ``seeds`` existed."""
    from webui.web.studio.info import image_captions, result_info

    info = result_info(GenerationResult.model_validate(batch), attempts=1, elapsed_ms=1.0, web_node="recipes")
    assert info["seeds"] == [4242, 4243, 4244, 4245]
    assert image_captions(info) == ["#1 · seed 4242", "#2 · seed 4243", "#3 · seed 4244", "#4 · seed 4245"]
    kept = GenerationResult.model_validate({key: value for key, value in batch.items() if key != "seeds"})
    assert result_info(kept, attempts=1, elapsed_ms=1.0, web_node="recipes")["seeds"] == info["seeds"]


def test_weights_are_hashed_once_and_remembered_across_restarts(tmp_path):
    """A file's hash is kept by path, size and modification time (``<cache_dir>/weight-hashes.json``): a new
    process (a restarted worker) does not read unchanged weights again; a changed file is read again."""
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    weights = model / "unet" / "weights.safetensors"
    weights.write_bytes(b"a" * 1000)
    (model / "config.json").write_text("{}")  # not weights: not hashed
    first = WeightHashes(tmp_path).directory(model)
    line = f"unet/weights.safetensors {hashlib.sha256(b'a' * 1000).hexdigest()}\n"
    assert first == hashlib.sha256(line.encode()).hexdigest()
    stat = weights.stat()
    weights.write_bytes(b"b" * 1000)  # same size and, restored below, same time: only a re-read could tell
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert WeightHashes(tmp_path).directory(model) == first
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert WeightHashes(tmp_path).directory(model) != first


def test_no_image_reads_the_weights_again(worker, monkeypatch):
    """The hashes are the load's: generating and encoding images hashes nothing."""
    hashed = []
    monkeypatch.setattr(WeightHashes, "file", lambda self, path: hashed.append(path))
    result = generate(worker, seed=1, num_images=2)
    assert hashed == [] and read_recipe(png(result["images"][1]), MAX_PNG).model_sha256


def test_a_batchs_progress_counts_every_images_steps(worker):
    """The images of a batch are drawn one after the other: progress runs once from 0 to steps x images."""
    lines = worker.post("/generate/stream", json={**JOB, "seed": 2, "num_images": 2}).text.splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["step"], e["total"]) for e in events[:-1]] == [(step, 4) for step in range(5)]
    assert events[-1]["event"] == "result" and events[-1]["result"]["seeds"] == [2, 3]
