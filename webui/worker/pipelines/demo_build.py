"""Build the offline demo model: a real ``ZImagePipeline`` with tiny, deterministic weights.

The demo model lets a node run end to end with no model hub and no GPU. It is the genuine
diffusers Z-Image-Turbo pipeline class, built from configs:

* ``transformer``: ``ZImageTransformer2DModel`` (dim 64, 2 layers, 2 heads),
* ``vae``: a 4-level ``AutoencoderKL`` (32-64 channels, 16 latent channels, Flux-style
  scaling/shift factors, as Z-Image uses),
* ``text_encoder``: a 2-layer ``Qwen3Model``,
* ``tokenizer``: a byte-level BPE trained here with ``tokenizers`` on a small built-in corpus,
  wrapped as ``Qwen2Tokenizer`` with a Qwen3-style chat template (the pipeline applies it),
* ``scheduler``: ``FlowMatchEulerDiscreteScheduler`` with Z-Image-Turbo's config,

plus a tiny LoRA for the transformer in the standard diffusers/PEFT format
(``lora/pytorch_lora_weights.safetensors``, loadable with ``pipe.load_lora_weights``), and the
same LoRA in the ComfyUI and kohya key layouts real Z-Image LoRAs are published in
(``lora-layouts/<layout>.safetensors``, see ``webui.worker.pipelines.lora_layouts``), with identical math.

Weights come from a fixed torch seed, so every build is identical and the same seed and
parameters give byte-identical images in any process. The model was never trained: its
images are abstract colour textures, not faces or portraits.

Usage::

    python -m webui.worker.pipelines.demo_build            # into <cache_dir>/demo-model
    python -m webui.worker.pipelines.demo_build --out DIR  # somewhere else
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3Model

from webui.settings_common import default_cache_dir
from webui.worker.pipelines.demo import (
    BUILD_MARKER,
    BUILD_VERSION,
    LORA_LAYOUTS_SUBDIR,
    LORA_SUBDIR,
    LORA_WEIGHT_NAME,
    SEED,
    demo_dir,
    ensure_built,
)
from webui.worker.pipelines.demo_tokenizer import train_tokenizer
from webui.worker.pipelines.lora_layouts import LAYOUTS, convert_lora

logger = logging.getLogger(__name__)

# Z-Image-Turbo's scheduler_config.json.
SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}

TEXT_DIM = 32
"""Hidden size of the tiny text encoder, which is also the transformer's caption feature size."""

DEMO_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "w1", "w2", "w3", "all_final_layer.2-1.linear"]
"""Attention, feed-forward and output layers of ``ZImageTransformer2DModel``."""


def build_pipeline():
    """Create the tiny ``ZImagePipeline`` and its LoRA state dict (deterministic)."""
    tokenizer = train_tokenizer()

    torch.manual_seed(SEED)
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=512,
            tie_word_embeddings=False,
        )
    )

    torch.manual_seed(SEED + 1)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=64,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=TEXT_DIM,
        axes_dims=[8, 12, 12],
        axes_lens=[1024, 256, 256],
    )

    torch.manual_seed(SEED + 2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[32, 32, 64, 64],
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=32,
        sample_size=1024,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )

    scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
    pipe = ZImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
    return pipe, build_lora_state_dict(transformer)


def build_lora_state_dict(
    model: torch.nn.Module, target_modules: list[str] | None = None, rank: int = 4, seed: int = SEED + 3
) -> dict[str, torch.Tensor]:
    """A deterministic random rank-``rank`` LoRA for ``model`` (PEFT state dict, ``model`` untouched).

    Both LoRA matrices are random (``lora_B`` is normally zero at the start of training).
    On the demo transformer the output projection is what makes it visible: at scale 1 the
    texture of the image changes about as much as with another seed; at scale 0 not at all.
    """
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=target_modules or DEMO_LORA_TARGETS, init_lora_weights=False
    )
    scratch = copy.deepcopy(model)  # PEFT wraps layers in place; keep the base model clean
    scratch.add_adapter(config, adapter_name="demo")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in scratch.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return {key: value.contiguous() for key, value in get_peft_model_state_dict(scratch, adapter_name="demo").items()}


def write_demo_model(out_dir: Path) -> None:
    """Build the pipeline and LoRA and save them (non-atomically) into ``out_dir``."""
    started = time.perf_counter()
    pipe, lora = build_pipeline()
    pipe.save_pretrained(out_dir, safe_serialization=True)
    ZImagePipeline.save_lora_weights(out_dir / LORA_SUBDIR, transformer_lora_layers=lora, weight_name=LORA_WEIGHT_NAME)
    write_lora_layouts(lora, out_dir / LORA_LAYOUTS_SUBDIR)
    (out_dir / BUILD_MARKER).write_text(json.dumps({"version": BUILD_VERSION, "seed": SEED}))
    logger.info("built demo model in %.1fs", time.perf_counter() - started)


def write_lora_layouts(lora: dict[str, torch.Tensor], out_dir: Path) -> None:
    """Write ``lora`` (a PEFT state dict) into ``out_dir`` once per layout of ``lora_layouts``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, layout in LAYOUTS.items():
        save_file(convert_lora(lora, layout), out_dir / f"{name}.safetensors", metadata={"format": "pt"})



def ensure_demo_model(cache_dir: Path) -> Path:
    """Return ``<cache_dir>/demo-model``, building it first if it is missing or incomplete."""
    return ensure_built(demo_dir(cache_dir), write_demo_model)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: build (or reuse) the demo model and print its path."""
    parser = argparse.ArgumentParser(prog="python -m webui.worker.pipelines.demo_build",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="Directory to build into (default: <cache>/demo-model).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = ensure_built(args.out, write_demo_model) if args.out else ensure_demo_model(default_cache_dir())
    print(path)


if __name__ == "__main__":
    main()
