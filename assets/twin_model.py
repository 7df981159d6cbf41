"""The Z-Image-Turbo architecture twin: the real pipeline's shapes with random weights, no download.

``build_twin()`` builds a genuine diffusers ``ZImagePipeline`` from configs only, with the layer
sizes of Tongyi-MAI/Z-Image-Turbo, so it costs the same compute and GPU memory as the real model
(about 10.3 billion parameters, 19.1 GiB of weights in bfloat16) while its weights are random:

* on ``meta`` (the default) nothing is allocated: tests use it to check the architecture;
* on ``cuda`` every weight is created and randomly initialised *on the GPU*, directly in the
  requested dtype (the host never holds a copy; ``bench.gpu`` uses it to measure real-size jobs).

Where each number comes from:

* ``TRANSFORMER_CONFIG``: Z-Image-Turbo's ``transformer/config.json`` as quoted in
  ``/work/shared/FACTS.md`` ("Z-Image-Turbo's real transformer config"), which also matches
  ``ZImageTransformer2DModel``'s own defaults in diffusers 0.42. ``axes_lens`` is
  ``[1536, 512, 512]`` in copies of that config.json (``_diffusers_version`` 0.36.0.dev0) and
  ``[1024, 512, 512]`` in diffusers' defaults: RoPE table lengths only, no parameters and no
  compute; the 512 of the height/width axes caps an image side at 512 x 2 x 8 = 8192 pixels.
* ``TEXT_ENCODER_CONFIG``: Qwen3-4B's ``config.json`` (Qwen/Qwen3-4B, the model card's "4.0B
  parameters, 3.6B non-embedding"), which Z-Image-Turbo ships as ``text_encoder/`` (class
  ``Qwen3Model``): hidden 2560, 36 layers, 32 query heads and 8 key/value heads of 128,
  MLP 9728, vocabulary 151936, RMSNorm eps 1e-6, RoPE theta 1e6. The same config appears
  verbatim in DiffSynth-Studio's ``diffsynth/models/z_image_text_encoder.py``.
* ``VAE_CONFIG``: the 16-channel ``AutoencoderKL`` of FLUX.1 that Z-Image-Turbo reuses
  (``vae/config.json`` of black-forest-labs/FLUX.1-dev and of Z-Image-Turbo: blocks
  128/256/512/512, 2 layers per block, 16 latent channels, ``scaling_factor`` 0.3611,
  ``shift_factor`` 0.1159, no quant convs).
* The scheduler is Z-Image-Turbo's (``webui.worker.pipelines.demo_build.SCHEDULER_CONFIG``).
* ``MAX_SEQUENCE_LENGTH``: the default ``max_sequence_length`` of ``ZImagePipeline.__call__``;
  the pipeline pads every prompt to it, so the text encoder always runs 512 tokens.

The tokenizer is the demo model's small locally trained BPE (wrapped as ``Qwen2Tokenizer`` with
Qwen3's chat template): prompt text does not matter to a twin, and with padding to 512 tokens
the text encoder's compute does not depend on it. The only difference from the real tokenizer
is the caption length the transformer sees (the prompt's real tokens, padded to a multiple of
32): a small vocabulary splits a prompt into somewhat more tokens, a few dozen tokens next to
the 3072 (768x1024) or 4096 (1024x1024) image tokens.

Usage::

    pipe = build_twin()                                    # on meta: shapes only
    pipe = build_twin("cuda", torch.bfloat16)              # real size, random weights, on the GPU
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from webui.worker.pipelines.demo_build import SCHEDULER_CONFIG
from webui.worker.pipelines.demo_tokenizer import train_tokenizer

logger = logging.getLogger(__name__)

MAX_SEQUENCE_LENGTH = 512
"""Tokens per prompt the text encoder runs: ``ZImagePipeline.__call__``'s ``max_sequence_length`` default."""

TRANSFORMER_CONFIG: Mapping[str, Any] = {
    "all_patch_size": (2,),
    "all_f_patch_size": (1,),
    "in_channels": 16,
    "dim": 3840,
    "n_layers": 30,
    "n_refiner_layers": 2,
    "n_heads": 30,
    "n_kv_heads": 30,
    "norm_eps": 1e-5,
    "qk_norm": True,
    "cap_feat_dim": 2560,
    "rope_theta": 256.0,
    "t_scale": 1000.0,
    "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512],
}
"""Z-Image-Turbo's ``ZImageTransformer2DModel`` (6.15 billion parameters)."""

TEXT_ENCODER_CONFIG: Mapping[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 40960,
    "max_window_layers": 36,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "attention_bias": False,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
}
"""Qwen3-4B as a ``Qwen3Config`` (transformers 5 field names); built as ``Qwen3Model`` (4.02 billion parameters)."""

VAE_CONFIG: Mapping[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "force_upcast": True,
    "mid_block_add_attention": True,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
"""The FLUX.1 / Z-Image 16-channel ``AutoencoderKL`` (83.8 million parameters)."""


@dataclass(frozen=True)
class TwinConfig:
    """The component configs a twin is built from."""

    name: str
    transformer: Mapping[str, Any]
    text_encoder: Mapping[str, Any]
    vae: Mapping[str, Any]
    max_sequence_length: int = MAX_SEQUENCE_LENGTH
    host_buildable: bool = False
    """Small enough to materialise on the CPU (only the scaled-down test config)."""


ZIMAGE_TURBO = TwinConfig("z-image-turbo", TRANSFORMER_CONFIG, TEXT_ENCODER_CONFIG, VAE_CONFIG)
"""The real-size architecture."""

TINY = TwinConfig(
    "tiny",
    transformer={**TRANSFORMER_CONFIG, "dim": 64, "n_layers": 2, "n_refiner_layers": 1, "n_heads": 2,
                 "n_kv_heads": 2, "cap_feat_dim": 32, "axes_dims": [8, 12, 12], "axes_lens": [1024, 256, 256]},
    text_encoder={**TEXT_ENCODER_CONFIG, "vocab_size": 1024, "hidden_size": 32, "intermediate_size": 64,
                  "num_hidden_layers": 2, "max_window_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 1, "head_dim": 16},
    vae={**VAE_CONFIG, "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1},
    host_buildable=True,
)
"""The same code path scaled down (2-layer transformer and text encoder, narrow VAE), for CPU tests."""


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create floating-point tensors in ``dtype`` inside the block (the constructors' own init runs in it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_twin(
    device: str | torch.device = "meta",
    dtype: torch.dtype = torch.bfloat16,
    config: TwinConfig = ZIMAGE_TURBO,
    seed: int = 0,
):
    """Build a ``ZImagePipeline`` with ``config``'s architecture and random weights on ``device``, in ``dtype``.

    Every module is constructed inside ``torch.device(device)`` with ``dtype`` as the default
    dtype, so its parameters and buffers are created where they will live and initialised there
    by the modules' own initialisers (seeded with ``seed``): on ``meta`` nothing is allocated, on
    ``cuda`` nothing passes through host memory. Buffers that the modules create in float32 on
    purpose (Qwen3's rotary frequencies) stay float32, as after ``from_pretrained(dtype=...)``.

    Raises ``ValueError`` for a real-size build on the CPU (about 41 GB in float32).
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    device = torch.device(device)
    if device.type not in ("meta", "cuda") and not config.host_buildable:
        raise ValueError(f"twin {config.name!r}: build it on 'meta' or 'cuda', not {device.type!r} (too large)")
    started = time.perf_counter()
    tokenizer = train_tokenizer()
    tokenizer.model_max_length = config.max_sequence_length
    scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)  # CPU tensors, outside the device context
    text_config = Qwen3Config(**config.text_encoder)
    if device.type != "meta":
        torch.manual_seed(seed)
    with torch.device(device), _default_dtype(dtype):
        transformer = ZImageTransformer2DModel(**config.transformer)
        text_encoder = Qwen3Model(text_config)
        vae = AutoencoderKL(**config.vae)
    pipe = ZImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
    logger.info("built the %s twin on %s in %s in %.1fs", config.name, device, dtype, time.perf_counter() - started)
    return pipe
