"""Model sources and loading (demo, local dirs, hub ids, presets, SDXL, LoRA) and the device plan."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bench.harness.processes import REPO
from tests.helpers import assert_same_picture, generate
from webui.schema import GenerationRequest, Limits, ModelFamily
from webui.settings import WorkerSettings
from webui.worker.errors import ModelLoadError
from webui.worker.pipelines import device
from webui.worker.pipelines.demo import LORA_SUBDIR, LORA_WEIGHT_NAME, is_complete
from webui.worker.pipelines.demo_build import build_lora_state_dict, build_pipeline
from webui.worker.pipelines.device import DeviceError, Machine, plan_device, probe_machine
from webui.worker.pipelines.loader import load_pipeline
from webui.worker.pipelines.models import PIPELINES, load_model
from webui.worker.pipelines.sources import PIPELINE_CLASSES, resolve_source

GIB = 1024**3


# --- one loading path for the demo model and any local directory -------------------------------------------


def test_demo_saved_and_loaded_back_gives_the_same_image(tmp_path: Path, portrait_cache_dir: Path, demo_model_dir):
    pipe, lora = build_pipeline()  # the in-memory build
    pipe.save_pretrained(tmp_path)
    type(pipe).save_lora_weights(tmp_path / LORA_SUBDIR, transformer_lora_layers=lora, weight_name=LORA_WEIGHT_NAME)

    pipe.load_lora_weights({f"transformer.{key}": value for key, value in lora.items()}, adapter_name="demo")
    pipe.set_progress_bar_config(disable=True)
    in_memory = pipe(
        prompt="a portrait in soft light", height=128, width=128, num_inference_steps=3, guidance_scale=0.0,
        generator=[torch.Generator("cpu").manual_seed(5)],
    ).images[0]

    from_dir = load_pipeline(WorkerSettings(model=str(tmp_path), lora=str(tmp_path / LORA_SUBDIR)))
    assert from_dir.family is ModelFamily.ZIMAGE
    assert_same_picture(generate(from_dir), np.asarray(in_memory))

    cached_demo = load_pipeline(WorkerSettings(model="demo", cache_dir=portrait_cache_dir))
    assert_same_picture(generate(cached_demo), np.asarray(in_memory))


def test_lora_file_path_same_as_lora_dir(demo_model_dir: Path):
    by_dir = load_pipeline(WorkerSettings(model=str(demo_model_dir), lora=str(demo_model_dir / LORA_SUBDIR)))
    by_file = load_pipeline(
        WorkerSettings(model=str(demo_model_dir), lora=str(demo_model_dir / LORA_SUBDIR / LORA_WEIGHT_NAME))
    )
    no_lora = load_pipeline(WorkerSettings(model=str(demo_model_dir), lora="none"))
    assert no_lora.model.lora is None and no_lora.describe()["lora"] is None
    assert np.array_equal(generate(by_dir), generate(by_file))
    assert not np.array_equal(generate(by_dir), generate(no_lora))


def test_img2img_shares_the_text2img_components(demo_model_dir: Path, portrait_cache_dir: Path):
    pipe = load_pipeline(WorkerSettings(model="demo", cache_dir=portrait_cache_dir))
    text2img, img2img = pipe.model.text2img, pipe.model.img2img
    assert type(img2img).__name__ == "ZImageImg2ImgPipeline"
    for name in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(img2img, name) is getattr(text2img, name), name


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_the_model_keeps_the_planned_dtype_after_loading(dtype: str, demo_model_dir: Path,
                                                         portrait_cache_dir: Path) -> None:
    """Half-precision weights stay half precision: diffusers' ``from_pipe`` (the img2img pipeline over the
    shared components) casts them to float32 unless told the dtype; on an H200 that made the Z-Image twin's
    jobs ~10x slower and its weights twice the size. The plan's dtype is forced here, as a GPU plan picks it."""
    settings = WorkerSettings(model="demo", cache_dir=portrait_cache_dir, dtype=dtype)
    source = resolve_source(settings.model, settings.lora, settings.cache_dir)
    model = load_model(source, getattr(torch, dtype))
    for name in ("transformer", "vae", "text_encoder"):
        dtypes = {tensor.dtype for tensor in getattr(model.text2img, name).parameters()}
        assert dtypes == {getattr(torch, dtype)}, (name, dtypes)
    assert model.img2img.transformer is model.text2img.transformer


def test_concurrent_builds_do_not_corrupt_the_demo_model(processes, tmp_path: Path, demo_model_dir: Path):
    target = tmp_path / "demo-model"
    builders = [
        processes.start(["python", "-m", "webui.worker.pipelines.demo_build", "--out", str(target)],
                        log_name=f"build-{i}")
        for i in range(2)
    ]
    for builder in builders:
        assert builder.wait(timeout=300) == 0, builder.log_path.read_text()[-2000:]
    assert is_complete(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-model"]  # no staging dirs left behind
    # Deterministic: the same bytes as the session's own build, file by file.
    built = sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    assert built == sorted(p.relative_to(demo_model_dir) for p in demo_model_dir.rglob("*") if p.is_file())
    for relative in built:
        assert (target / relative).read_bytes() == (demo_model_dir / relative).read_bytes(), relative


# --- source resolution ---------------------------------------------------------------------------------------


def test_presets_resolve_to_hub_models_and_their_loras(tmp_path: Path):
    awportrait = resolve_source("awportrait-z", "auto", tmp_path)
    assert (awportrait.location, awportrait.lora, awportrait.is_local) == (
        "Tongyi-MAI/Z-Image-Turbo", "Shakker-Labs/AWPortrait-Z", False
    )
    assert resolve_source("awportrait-z", "none", tmp_path).lora is None
    sdxl = resolve_source("sdxl", "some-user/some-sdxl-lora", tmp_path)
    assert (sdxl.location, sdxl.lora) == ("stabilityai/stable-diffusion-xl-base-1.0", "some-user/some-sdxl-lora")
    assert resolve_source("sdxl", "auto", tmp_path).lora is None
    hub = resolve_source("someone/some-model", "auto", tmp_path)
    assert (hub.location, hub.is_local, hub.lora, hub.defaults) == ("someone/some-model", False, None, None)
    local = resolve_source(str(tmp_path), "auto", tmp_path)
    assert local.is_local and local.location == str(tmp_path.resolve())


def test_family_defaults_for_presets_follow_the_model_cards():
    from webui.worker.pipelines.sources import FAMILY_DEFAULTS, PRESETS

    zimage = FAMILY_DEFAULTS[ModelFamily.ZIMAGE]
    assert (zimage.steps, zimage.guidance) == (8, 0.0)  # Z-Image-Turbo: 8 steps, no CFG
    sdxl = FAMILY_DEFAULTS[ModelFamily.SDXL]
    assert (sdxl.steps, sdxl.guidance, sdxl.width, sdxl.height) == (30, 7.5, 1024, 1024)
    assert PRESETS["awportrait-z"].defaults is None and PRESETS["sdxl"].defaults is None


# --- every failure is one ModelLoadError with a one-line message -----------------------------------------------


def assert_load_error(match: str, **fields) -> str:
    with pytest.raises(ModelLoadError, match=match) as info:
        load_pipeline(WorkerSettings(**fields))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_directory(tmp_path: Path):
    message = assert_load_error("does not exist", model=str(tmp_path / "no-such-model"))
    assert str(tmp_path / "no-such-model") in message


def test_a_missing_model_or_device_fails_the_loader_before_diffusers_is_imported(tmp_path: Path,
                                                                                   demo_model_dir: Path):
    # A fresh interpreter, as a worker's: the loader's first steps name what is wrong in one line, in about a
    # second, instead of after diffusers' seconds of imports (a crash-looping worker pays those at every start).
    script = (
        "import sys\n"
        "from webui.settings import WorkerSettings\n"
        "from webui.worker.errors import ModelLoadError\n"
        "from webui.worker.pipelines.loader import load_pipeline\n"
        "import torch\n"
        "torch.cuda.is_available = lambda: False\n"
        "for fields in ({'model': sys.argv[1]}, {'model': sys.argv[2], 'device': 'cuda'}):\n"
        "    try:\n"
        "        load_pipeline(WorkerSettings(**fields))\n"
        "    except ModelLoadError as exc:\n"
        "        print(exc)\n"
        "print('diffusers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "no-such-model"), str(demo_model_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    missing, no_cuda, imported = done.stdout.strip().splitlines()
    assert "does not exist" in missing and "cuda" in no_cuda.lower(), done.stdout
    assert imported == "False"


def test_the_sources_name_the_classes_the_loader_loads():
    assert {family: (classes.text2img.__name__, classes.img2img.__name__) for family, classes in PIPELINES.items()} \
        == PIPELINE_CLASSES


def test_unknown_hub_id_offline(hub_offline):
    assert_load_error("no-such-org/no-such-model", model="no-such-org/no-such-model")


def test_preset_needs_the_hub(hub_offline):
    assert_load_error("Tongyi-MAI/Z-Image-Turbo", model="awportrait-z")


def test_malformed_model_index(tmp_path: Path):
    (tmp_path / "model_index.json").write_text("{not json")
    assert_load_error("not a valid model_index.json", model=str(tmp_path))


def test_unsupported_pipeline_class(tmp_path: Path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    assert_load_error("FluxPipeline.*not supported", model=str(tmp_path))


def test_missing_weights(tmp_path: Path, demo_model_dir: Path):
    (tmp_path / "model_index.json").write_text((demo_model_dir / "model_index.json").read_text())
    assert_load_error("cannot load", model=str(tmp_path))


def test_missing_lora(tmp_path: Path, demo_model_dir: Path):
    assert_load_error("lora", model=str(demo_model_dir), lora=str(tmp_path / "nothing.safetensors"))


def test_lora_for_another_model(tmp_path: Path, demo_model_dir: Path):
    from safetensors.torch import save_file

    save_file({"transformer.nowhere.lora_A.weight": torch.zeros(4, 8)}, tmp_path / LORA_WEIGHT_NAME)
    assert_load_error("lora", model=str(demo_model_dir), lora=str(tmp_path))


def test_cuda_requested_without_cuda(monkeypatch: pytest.MonkeyPatch, demo_model_dir: Path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert_load_error("cuda", model=str(demo_model_dir), device="cuda")


# --- a tiny SDXL, built from configs, through the local-directory path -----------------------------------------


def clip_tokenizer():
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols (no merges), built locally."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
        vocab.setdefault(symbol + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


@pytest.fixture(scope="module")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=32,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, sample_size=128,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )  # fmt: skip
    text_config = CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, vocab_size=600, hidden_act="gelu", projection_dim=32,
    )  # fmt: skip
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=vae, scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", timestep_spacing="leading"),
        text_encoder=CLIPTextModel(text_config), text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(),
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("tiny-sdxl")
    pipe.save_pretrained(directory)
    lora = build_lora_state_dict(unet, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    StableDiffusionXLPipeline.save_lora_weights(directory / "lora", unet_lora_layers=lora, weight_name=LORA_WEIGHT_NAME)
    return directory


def test_tiny_sdxl_round_trip(tiny_sdxl_dir: Path):
    pipe = load_pipeline(WorkerSettings(model=str(tiny_sdxl_dir), lora=str(tiny_sdxl_dir / "lora")))
    assert pipe.family is ModelFamily.SDXL
    assert pipe.describe()["pipeline"] == "StableDiffusionXLPipeline"
    assert type(pipe.model.img2img).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert pipe.model.img2img.unet is pipe.model.text2img.unet
    defaults = pipe.effective_params(GenerationRequest(prompt="x"), seed=1)
    assert (defaults.steps, defaults.guidance, defaults.width, defaults.height) == (30, 7.5, 1024, 1024)

    calls: list[tuple[int, int]] = []
    sdxl_limits = {"limits": Limits(family=ModelFamily.SDXL)}  # sizes in multiples of 8
    fields = {"prompt": "a face", "steps": 2, "width": 88, "height": 64}
    request = GenerationRequest.model_validate(fields, context=sdxl_limits)
    params = pipe.effective_params(request, seed=3)
    image = pipe.generate(params, on_step=lambda step, total: calls.append((step, total)))[0]
    assert image.size == (88, 64) and calls == [(1, 2), (2, 2)]
    with_lora = np.asarray(image)
    without = np.asarray(pipe.generate(params.model_copy(update={"lora_scale": 0.0}))[0])
    assert not np.array_equal(with_lora, without)

    photo = Image.new("RGB", (90, 60), (200, 160, 120))
    retouch = pipe.effective_params(
        GenerationRequest(prompt="a face", steps=2, strength=0.5, init_image="uploaded"), seed=3, init_image=photo
    )
    assert (retouch.width % 8, retouch.height % 8) == (0, 0) and abs(retouch.width / retouch.height - 1.5) < 0.05


# --- the device plan, with only the CUDA queries mocked ----------------------------------------------------------


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch):
    """Pretend torch sees one CUDA device; returns a function to describe it."""

    def install(memory_gib: float = 24, bf16: bool = True, xformers: bool = False) -> Machine:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        properties = SimpleNamespace(name="Fake GPU", total_memory=int(memory_gib * GIB), major=8, minor=6)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: properties)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
        monkeypatch.setattr(device, "xformers_available", lambda: xformers)
        return probe_machine()

    return install


def test_plan_on_cpu(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = plan_device(WorkerSettings(compile="on"), probe_machine())
    assert (plan.device, plan.dtype, plan.attention, plan.compile, plan.cpu_offload) == (
        "cpu", torch.float32, "sdpa", False, False
    )
    assert plan.as_dict()["dtype"] == "float32"


def test_plan_on_a_big_gpu(fake_gpu):
    machine = fake_gpu(memory_gib=24, bf16=True, xformers=True)
    plan = plan_device(WorkerSettings(), machine)
    assert (plan.device, plan.dtype, plan.attention, plan.compile, plan.cpu_offload) == (
        "cuda", torch.bfloat16, "xformers", True, False
    )
    assert plan.gpu_name == "Fake GPU" and plan.gpu_memory_gib == 24.0
    assert not plan_device(WorkerSettings(compile="off"), machine).compile
    assert plan_device(WorkerSettings(attention="sdpa"), machine).attention == "sdpa"


def test_plan_on_a_small_old_gpu(fake_gpu):
    machine = fake_gpu(memory_gib=8, bf16=False, xformers=False)
    plan = plan_device(WorkerSettings(), machine)
    assert (plan.dtype, plan.attention, plan.cpu_offload, plan.compile) == (torch.float16, "sdpa", True, False)
    assert plan_device(WorkerSettings(compile="on"), machine).compile
    assert not plan_device(WorkerSettings(cpu_offload="off"), machine).cpu_offload
    with pytest.raises(DeviceError, match="bfloat16"):
        plan_device(WorkerSettings(dtype="bfloat16"), machine)
    with pytest.raises(DeviceError, match="xformers"):
        plan_device(WorkerSettings(attention="xformers"), machine)


def test_plan_forced_cpu_on_a_gpu_machine(fake_gpu):
    plan = plan_device(WorkerSettings(device="cpu", compile="on"), fake_gpu(memory_gib=8))
    assert (plan.device, plan.dtype, plan.compile, plan.cpu_offload, plan.gpu_name) == (
        "cpu", torch.float32, False, False, ""
    )


def test_plan_rejects_impossible_requests():
    cpu = Machine(cuda=False)
    with pytest.raises(DeviceError, match="cuda"):
        plan_device(WorkerSettings(device="cuda"), cpu)
    with pytest.raises(DeviceError, match="xformers"):
        plan_device(WorkerSettings(attention="xformers"), Machine(cuda=False, xformers=True))
    with pytest.raises(DeviceError, match="cpu_offload"):
        plan_device(WorkerSettings(cpu_offload="on"), cpu)


def test_vae_tiling_decision():
    auto = plan_device(WorkerSettings(), Machine(cuda=False))
    assert not auto.tile_vae(1024, 1024) and auto.tile_vae(1024, 1040) and auto.tile_vae(2048, 2048)
    assert plan_device(WorkerSettings(vae_tiling="on"), Machine(cuda=False)).tile_vae(64, 64)
    assert not plan_device(WorkerSettings(vae_tiling="off"), Machine(cuda=False)).tile_vae(2048, 2048)


def test_apply_plan_compiles_the_denoiser_when_planned(demo_model_dir: Path):
    from webui.worker.pipelines.device import apply_plan
    from webui.worker.pipelines.models import load_model

    model = load_model(resolve_source(str(demo_model_dir), "none", demo_model_dir.parent), torch.float32)
    plan = plan_device(WorkerSettings(), Machine(cuda=False))
    apply_plan(model.text2img, plan)
    assert model.text2img.transformer._compiled_call_impl is None
    apply_plan(model.text2img, dataclasses.replace(plan, compile=True))  # compiles lazily, at the first call
    assert model.text2img.transformer._compiled_call_impl is not None
    assert model.img2img.transformer is model.text2img.transformer


def test_demo_build_failure_is_a_load_error(tmp_path: Path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache dir should be")
    assert_load_error("cannot build the demo model", model="demo", cache_dir=blocker)
