"""PortraitPipeline on the real offline demo model: sizes, determinism, LoRA, retouch, steps."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.schema import GenerationRequest
from webui.settings import WorkerSettings
from webui.worker.pipelines.diffusers import PortraitPipeline
from webui.worker.pipelines.loader import load_pipeline

STEPS = 3


@pytest.fixture(scope="module")
def pipeline(demo_model_dir: Path, portrait_cache_dir: Path) -> PortraitPipeline:
    return load_pipeline(WorkerSettings(model="demo", cache_dir=portrait_cache_dir))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run(pipeline: PortraitPipeline, seed: int = 1, init_image: Image.Image | None = None, on_step=None, **fields):
    """Generate with the demo model; small and few-step so that the suite stays fast."""
    fields = {"prompt": "a portrait in soft light", "steps": STEPS, "width": 128, "height": 128, **fields}
    if init_image is not None:
        fields["init_image"] = "uploaded"  # the worker decodes uploads; here we pass the image itself
    params = pipeline.effective_params(GenerationRequest(**fields), seed=seed, init_image=init_image)
    return pipeline.generate(params, init_image=init_image, on_step=on_step)


def test_describe_reports_model_and_plan(pipeline: PortraitPipeline):
    info = pipeline.describe()
    assert info["model"] == "demo"
    assert info["family"] == "z-image"
    assert info["pipeline"] == "ZImagePipeline"
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["attention"] == "sdpa"
    assert info["lora"].endswith("lora")
    assert info["defaults"] == {"steps": 8, "guidance": 0.0, "width": 512, "height": 512}
    json.dumps(info)  # served as JSON by /readyz


def test_effective_params_fill_defaults(pipeline: PortraitPipeline):
    params = pipeline.effective_params(GenerationRequest(prompt="x"), seed=42)
    assert (params.steps, params.guidance, params.width, params.height) == (8, 0.0, 512, 512)
    assert params.seed == 42 and params.mode == "text2img" and params.strength is None
    explicit = pipeline.effective_params(GenerationRequest(prompt="x", steps=3, guidance=1.5, width=64, height=96), 1)
    assert (explicit.steps, explicit.guidance, explicit.width, explicit.height) == (3, 1.5, 64, 96)


@pytest.mark.parametrize("width,height", [(128, 128), (192, 96)])
def test_generate_size(pipeline: PortraitPipeline, width: int, height: int):
    images = run(pipeline, width=width, height=height, num_images=2)
    assert len(images) == 2
    for image in images:
        assert Image.open(io.BytesIO(png_bytes(image))).size == (width, height)
    assert png_bytes(images[0]) != png_bytes(images[1])  # seed, seed+1


def test_same_seed_same_bytes_other_seed_differs(pipeline: PortraitPipeline):
    first = png_bytes(run(pipeline, seed=7)[0])
    assert png_bytes(run(pipeline, seed=7)[0]) == first
    assert png_bytes(run(pipeline, seed=8)[0]) != first


def test_deterministic_across_processes(
    pipeline: PortraitPipeline, processes, portrait_cache_dir: Path, tmp_path: Path
):
    script = (
        "import sys; from pathlib import Path\n"
        "from tests.test_pipeline import png_bytes, run\n"
        "from webui.worker.pipelines.loader import load_pipeline\n"
        "from webui.settings import WorkerSettings\n"
        "pipe = load_pipeline(WorkerSettings(model='demo', cache_dir=Path(sys.argv[1])))\n"
        "Path(sys.argv[2]).write_bytes(png_bytes(run(pipe, seed=11, guidance=2.0, negative_prompt='blurry')[0]))\n"
    )
    out = tmp_path / "other-process.png"
    proc = processes.start(["python", "-c", script, str(portrait_cache_dir), str(out)], log_name="determinism")
    assert proc.wait(timeout=300) == 0, proc.log_path.read_text()[-2000:]
    assert out.read_bytes() == png_bytes(run(pipeline, seed=11, guidance=2.0, negative_prompt="blurry")[0])


def test_lora_scale_changes_image_and_does_not_leak(pipeline: PortraitPipeline):
    with_lora = np.asarray(run(pipeline, lora_scale=1.0)[0], dtype=float)
    without = np.asarray(run(pipeline, lora_scale=0.0)[0], dtype=float)
    assert np.abs(with_lora - without).mean() > 10  # visibly different, not rounding noise
    # Each request sets its own scale: nothing carries over to the next one.
    assert np.array_equal(np.asarray(run(pipeline, lora_scale=1.0)[0], dtype=float), with_lora)
    assert np.array_equal(np.asarray(run(pipeline, lora_scale=0.0)[0], dtype=float), without)
    half = np.asarray(run(pipeline, lora_scale=0.5)[0], dtype=float)
    assert not np.array_equal(half, with_lora) and not np.array_equal(half, without)


def test_retouch_keeps_input_aspect(pipeline: PortraitPipeline):
    photo = Image.new("RGB", (300, 200), (180, 120, 90))
    image = run(pipeline, init_image=photo, width=None, height=None, steps=2, strength=0.5)[0]  # one step: the
    # subject is the size (about the model's default area), not the pixels
    assert image.width % 16 == 0 and image.height % 16 == 0
    assert abs(image.width / image.height - 1.5) < 0.05
    assert abs(image.width * image.height - 512 * 512) / (512 * 512) < 0.05  # ~ the model's default area

    only_width = run(pipeline, init_image=photo, width=96, height=None)[0]
    assert only_width.size == (96, 64)
    forced = run(pipeline, init_image=photo, width=128, height=128)[0]
    assert forced.size == (128, 128)


def test_retouch_is_deterministic_and_follows_input(pipeline: PortraitPipeline):
    red, blue = Image.new("RGB", (128, 128), (220, 30, 30)), Image.new("RGB", (128, 128), (30, 30, 220))
    first = png_bytes(run(pipeline, init_image=red, strength=0.5)[0])
    assert png_bytes(run(pipeline, init_image=red, strength=0.5)[0]) == first
    assert png_bytes(run(pipeline, init_image=blue, strength=0.5)[0]) != first


def test_on_step_called_for_every_step(pipeline: PortraitPipeline):
    calls: list[tuple[int, int]] = []
    run(pipeline, steps=4, on_step=lambda step, total: calls.append((step, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]

    # img2img runs only the last strength * steps steps, and says so.
    calls.clear()
    photo = Image.new("RGB", (128, 128))
    run(pipeline, steps=4, strength=0.5, init_image=photo, on_step=lambda s, t: calls.append((s, t)))
    assert calls == [(1, 2), (2, 2)]


class Stop(Exception):
    pass


def test_on_step_exception_propagates(pipeline: PortraitPipeline):
    seen: list[int] = []

    def stop_at_two(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            raise Stop("cancelled")

    with pytest.raises(Stop, match="cancelled"):
        run(pipeline, steps=4, on_step=stop_at_two)
    assert seen == [1, 2]
    # The pipeline is still usable and unaffected by the aborted job.
    assert png_bytes(run(pipeline, seed=3)[0]) == png_bytes(run(pipeline, seed=3)[0])


def test_vae_tiling_follows_plan_per_request(pipeline: PortraitPipeline):
    tiled = PortraitPipeline(
        pipeline.model, dataclasses.replace(pipeline.plan, vae_tiling="on"), "demo", pipeline.defaults, 2048
    )
    try:
        run(tiled, steps=1)
        assert pipeline.model.text2img.vae.use_tiling
    finally:
        run(pipeline, steps=1)  # auto: 128x128 is small, so tiling goes off again
    assert not pipeline.model.text2img.vae.use_tiling


def test_retouch_without_image_is_a_clear_error(pipeline: PortraitPipeline):
    params = pipeline.effective_params(GenerationRequest(prompt="x", init_image="data"), seed=1)
    with pytest.raises(ValueError, match="init_image"):
        pipeline.generate(params)


def test_pinning_host_memory_only_concerns_weights_bound_for_a_gpu(pipeline: PortraitPipeline) -> None:
    """A warm standby pins its host-memory weights only when the plan sends them to a GPU and does not offload;
    on this CPU plan nothing is pinned, and a pipeline already placed has nothing to pin."""
    from assets.twin_model import TINY, build_twin
    from webui.worker.pipelines.device import pin_host_memory

    assert pipeline.plan.device == "cpu" and pipeline.pin_host_memory() == 0
    meta = build_twin("meta", config=TINY)  # tensors off the host: nothing a GPU plan could pin
    gpu_plan = dataclasses.replace(pipeline.plan, device="cuda")
    assert pin_host_memory(meta, gpu_plan) == 0
    assert pin_host_memory(pipeline.model.text2img, dataclasses.replace(gpu_plan, cpu_offload=True)) == 0
    assert not any(tensor.is_pinned() for tensor in pipeline.model.text2img.transformer.parameters())
