"""Real LoRA files: ComfyUI and kohya key layouts load to the diffusers layout's picture.

Each layout of the demo LoRA (``assets.lora_layouts``) goes through the real loading path,
``PortraitPipeline.load``, as ``--lora FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from peft import get_peft_model_state_dict

from assets.build_demo_model import LORA_LAYOUTS_SUBDIR, LORA_SUBDIR, LORA_WEIGHT_NAME
from assets.lora_layouts import LAYOUTS
from tests.helpers import assert_same_picture, generate
from webui.settings import WorkerSettings
from webui.worker.models import LORA_ADAPTER
from webui.worker.pipeline import PortraitPipeline


class Reference(NamedTuple):
    """What the diffusers-layout demo LoRA loads to, and the picture without any LoRA."""

    adapter: dict[str, torch.Tensor]
    image: np.ndarray
    no_lora_image: np.ndarray


def loaded_adapter(pipe: PortraitPipeline) -> dict[str, torch.Tensor]:
    """The LoRA tensors the transformer holds as ``LORA_ADAPTER`` (diffusers/PEFT keys)."""
    return get_peft_model_state_dict(pipe.model.text2img.transformer, adapter_name=LORA_ADAPTER)


def load(model_dir: Path, lora: str) -> PortraitPipeline:
    return PortraitPipeline.load(WorkerSettings(model=str(model_dir), lora=lora))


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
