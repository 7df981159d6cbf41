"""Real LoRA files: ComfyUI and kohya key layouts load to the diffusers layout's picture.

Each layout of the demo LoRA (``webui.worker.pipelines.lora_layouts``) goes through the real loading path,
``load_pipeline``: as ``--lora FILE``, and through the ``awportrait-z`` preset's hub id,
resolved offline from a local Hugging Face cache that holds the file under a name nobody passes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from tests.helpers import assert_same_picture, generate
from webui.settings import WorkerSettings
from webui.worker.errors import ModelLoadError
from webui.worker.pipelines.demo import LORA_LAYOUTS_SUBDIR, LORA_SUBDIR, LORA_WEIGHT_NAME
from webui.worker.pipelines.diffusers import PortraitPipeline
from webui.worker.pipelines.loader import load_pipeline
from webui.worker.pipelines.lora_layouts import LAYOUTS
from webui.worker.pipelines.models import LORA_ADAPTER, lora_weight_file
from webui.worker.pipelines.sources import PRESETS

PRESET = "awportrait-z"
HUB_FILE_NAME = "AWPortrait-Z_v1.safetensors"
"""Any name: the loader has to find the file without being told."""


class Reference(NamedTuple):
    """What the diffusers-layout demo LoRA loads to, and the picture without any LoRA."""

    adapter: dict[str, torch.Tensor]
    image: np.ndarray
    no_lora_image: np.ndarray


def loaded_adapter(pipe: PortraitPipeline) -> dict[str, torch.Tensor]:
    """The LoRA tensors the transformer holds as ``LORA_ADAPTER`` (diffusers/PEFT keys)."""
    return get_peft_model_state_dict(pipe.model.text2img.transformer, adapter_name=LORA_ADAPTER)


def load(model_dir: Path, lora: str) -> PortraitPipeline:
    return load_pipeline(WorkerSettings(model=str(model_dir), lora=lora))


@pytest.fixture(scope="module")
def reference(demo_model_dir: Path) -> Reference:
    diffusers_layout = load(demo_model_dir, str(demo_model_dir / LORA_SUBDIR / LORA_WEIGHT_NAME))
    no_lora = load(demo_model_dir, "none")
    return Reference(loaded_adapter(diffusers_layout), generate(diffusers_layout), generate(no_lora))


def assert_loads_like_the_diffusers_layout(pipe: PortraitPipeline, reference: Reference) -> None:
    """Every LoRA tensor arrived, with the same values, and the picture is the same (within rounding).

    diffusers silently skips tensors of modules the model lacks, so the key sets are compared. The
    layouts' alpha scaling is by a power of two, hence exact: the tensors must be equal bit for bit.
    """
    adapter = loaded_adapter(pipe)
    assert sorted(adapter) == sorted(reference.adapter)
    unequal = [key for key, value in adapter.items() if not torch.equal(value, reference.adapter[key])]
    assert not unequal, unequal[:3]
    image = generate(pipe)
    assert_same_picture(image, reference.image)
    with pytest.raises(AssertionError):  # the LoRA shows: not the picture without it
        assert_same_picture(image, reference.no_lora_image)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_lora_file_in_each_layout(layout: str, demo_model_dir: Path, reference: Reference):
    path = demo_model_dir / LORA_LAYOUTS_SUBDIR / f"{layout}.safetensors"
    pipe = load(demo_model_dir, str(path))
    assert pipe.describe()["lora"] == str(path)
    assert_loads_like_the_diffusers_layout(pipe, reference)


def test_lora_tensors_no_module_takes_are_reported(demo_model_dir: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture):
    # diffusers drops them silently (e.g. a fused qkv the Z-Image converter does not split): the
    # loader counts what arrived and says how many were ignored.
    kohya = load_file(demo_model_dir / LORA_LAYOUTS_SUBDIR / "kohya.safetensors")
    stray = {f"lora_unet_layers_0_attention_qkv.{part}": torch.zeros(4, 4) for part in ("lora_down.weight",
                                                                                     "lora_up.weight")}
    path = tmp_path / "with-stray-keys.safetensors"
    save_file({**kohya, **stray, "lora_unet_layers_0_attention_qkv.alpha": torch.tensor(4.0)}, path)
    with caplog.at_level("WARNING", logger="webui.worker.pipelines.models"):
        load(demo_model_dir, str(path))
    assert "2 of its 60 LoRA weight tensors match no module" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="webui.worker.pipelines.models"):
        load(demo_model_dir, str(demo_model_dir / LORA_LAYOUTS_SUBDIR / "kohya.safetensors"))
    assert "match no module" not in caplog.text


# --- the preset's hub id, from an offline Hugging Face cache -------------------------------------------------------


def add_to_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Lay ``files`` out as huggingface_hub caches a repo's ``main``; return the snapshot directory.

    ``models--Owner--Name/``: ``blobs/<sha256>``, ``snapshots/<commit>/<name>`` linking to the blob,
    and ``refs/main`` holding the commit hash.
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_offline) -> Path:
    """An empty Hugging Face hub cache that huggingface_hub uses, offline."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_preset_finds_the_single_safetensors_of_its_hub_repo(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch, demo_model_dir: Path, reference: Reference
):
    preset = PRESETS[PRESET]
    comfyui = (demo_model_dir / LORA_LAYOUTS_SUBDIR / "comfyui.safetensors").read_bytes()
    snapshot = add_to_hub_cache(hub_cache, preset.lora, {HUB_FILE_NAME: comfyui, "README.md": b"# a LoRA\n"})
    # The preset as shipped, but with the local demo model as its base (Z-Image-Turbo is not cached here).
    monkeypatch.setitem(PRESETS, PRESET, dataclasses.replace(preset, model=str(demo_model_dir)))

    pipe = load_pipeline(WorkerSettings(model=PRESET))
    assert pipe.describe()["lora"] == preset.lora == "Shakker-Labs/AWPortrait-Z"
    assert lora_weight_file(preset.lora) == snapshot / HUB_FILE_NAME
    assert_loads_like_the_diffusers_layout(pipe, reference)


def test_hub_repo_with_several_weight_files_is_an_error(hub_cache: Path):
    add_to_hub_cache(hub_cache, "someone/loras", {"a.safetensors": b"a", "b.safetensors": b"b"})
    with pytest.raises(ModelLoadError, match=r"one \.safetensors file .*found a\.safetensors, b\.safetensors"):
        lora_weight_file("someone/loras")


def test_diffusers_weight_name_wins_among_several(hub_cache: Path):
    snapshot = add_to_hub_cache(hub_cache, "someone/loras", {"a.safetensors": b"a", LORA_WEIGHT_NAME: b"b"})
    assert lora_weight_file("someone/loras") == snapshot / LORA_WEIGHT_NAME


def test_hub_repo_not_in_the_offline_cache(hub_cache: Path):
    with pytest.raises(ModelLoadError, match="someone/elsewhere.*Hugging Face hub") as info:
        lora_weight_file("someone/elsewhere")
    assert "\n" not in str(info.value)
