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

    python -m webui.worker.pipelines.demo            # into <cache_dir>/demo-model
    python -m webui.worker.pipelines.demo --out DIR  # somewhere else
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DEMO_DIR_NAME = "demo-model"
LORA_SUBDIR = "lora"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
LORA_LAYOUTS_SUBDIR = "lora-layouts"
"""The demo LoRA in other key layouts: ``<layout>.safetensors`` for each of ``lora_layouts.LAYOUTS``."""
BUILD_MARKER = "demo_build.json"
BUILD_VERSION = 3
"""Bump when the architecture or the weights change, so that old caches get rebuilt."""
SEED = 20240601

# Z-Image-Turbo's scheduler_config.json.
SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}

TEXT_DIM = 32
"""Hidden size of the tiny text encoder, which is also the transformer's caption feature size."""

DEMO_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "w1", "w2", "w3", "all_final_layer.2-1.linear"]
"""Attention, feed-forward and output layers of ``ZImageTransformer2DModel``."""

CHAT_TEMPLATE = (  # Qwen3's chat template, reduced to what ZImagePipeline uses
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

CORPUS = """
a portrait of a woman with long dark hair, soft window light, shallow depth of field
a portrait of a man with a beard, studio lighting, grey background, 85mm lens
close-up photo of an old fisherman, weathered skin, golden hour, film grain
professional headshot, business suit, neutral backdrop, sharp focus, high detail
a young girl smiling in a sunflower field, warm colors, natural light
black and white portrait, dramatic shadows, rembrandt lighting, fine art photography
a cinematic still of a woman in a red coat walking in the rain at night, neon reflections
an elegant bride in a white dress, bokeh, pastel tones, romantic mood
a smiling chef in a kitchen, candid, documentary style, morning light
a dancer mid-jump, motion blur, stage lights, vivid colors
low quality, blurry, deformed, distorted face, extra fingers, watermark, text, jpeg artifacts
oil painting of a noble lady, renaissance style, rich textures, museum lighting
watercolor portrait of a child with freckles, loose brush strokes, soft palette
retouch the photo: smooth skin, brighten eyes, keep identity, natural look
the quick brown fox jumps over the lazy dog 0123456789 !?.,:;'"()[]{}<>-+=*/
"""


def train_tokenizer(vocab_size: int = 600):
    """Train a byte-level BPE on ``CORPUS`` and wrap it as the tokenizer Z-Image expects."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS[:1],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS.strip().splitlines(), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(pair) for pair in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_pipeline():
    """Create the tiny ``ZImagePipeline`` and its LoRA state dict (deterministic)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

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
    from peft import LoraConfig, get_peft_model_state_dict

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


def is_complete(model_dir: Path) -> bool:
    """True when ``model_dir`` holds a finished demo build of the current version."""
    marker = model_dir / BUILD_MARKER
    try:
        return json.loads(marker.read_text()).get("version") == BUILD_VERSION
    except (OSError, ValueError):
        return False


def write_demo_model(out_dir: Path) -> None:
    """Build the pipeline and LoRA and save them (non-atomically) into ``out_dir``."""
    from diffusers import ZImagePipeline

    started = time.perf_counter()
    pipe, lora = build_pipeline()
    pipe.save_pretrained(out_dir, safe_serialization=True)
    ZImagePipeline.save_lora_weights(out_dir / LORA_SUBDIR, transformer_lora_layers=lora, weight_name=LORA_WEIGHT_NAME)
    write_lora_layouts(lora, out_dir / LORA_LAYOUTS_SUBDIR)
    (out_dir / BUILD_MARKER).write_text(json.dumps({"version": BUILD_VERSION, "seed": SEED}))
    logger.info("built demo model in %.1fs", time.perf_counter() - started)


def write_lora_layouts(lora: dict[str, torch.Tensor], out_dir: Path) -> None:
    """Write ``lora`` (a PEFT state dict) into ``out_dir`` once per layout of ``lora_layouts``."""
    from safetensors.torch import save_file

    from webui.worker.pipelines.lora_layouts import LAYOUTS, convert_lora

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, layout in LAYOUTS.items():
        save_file(convert_lora(lora, layout), out_dir / f"{name}.safetensors", metadata={"format": "pt"})


def ensure_demo_model(cache_dir: Path) -> Path:
    """Return ``<cache_dir>/demo-model``, building it first if it is missing or incomplete."""
    return ensure_built(Path(cache_dir) / DEMO_DIR_NAME)


def ensure_built(target: Path) -> Path:
    """Return ``target``, building the demo model into it first if it is missing or incomplete.

    The build happens in a temporary sibling directory that is renamed into place, so
    concurrent callers never see (or produce) a half-written model: the first rename wins
    and the others reuse its result.
    """
    target = Path(target).absolute()
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the model is meant to be shared
    try:
        logger.info("building the offline demo model in %s", target)
        write_demo_model(staging)
        if target.exists() and not is_complete(target):
            _remove_stale(target)
        try:
            os.rename(staging, target)
        except OSError:
            if not is_complete(target):  # neither ours nor a complete build is in place
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _remove_stale(target: Path) -> None:
    """Move an incomplete old build out of the way (atomically), then delete it."""
    graveyard = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
    try:
        os.rename(target, graveyard / target.name)
    except FileNotFoundError:
        pass  # another builder moved it first
    shutil.rmtree(graveyard, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: build (or reuse) the demo model and print its path."""
    from webui.settings import default_cache_dir

    parser = argparse.ArgumentParser(prog="python -m webui.worker.pipelines.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="Directory to build into (default: <cache>/demo-model).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = ensure_built(args.out) if args.out else ensure_demo_model(default_cache_dir())
    print(path)


if __name__ == "__main__":
    main()
