"""The Z-Image-Turbo architecture twin (``assets/twin_model.py``), on the CPU: shapes only, nothing allocated.

Parameter counts are checked three ways: the built modules' ``numel`` against counts computed by
hand from the configs (formulas below, written from the layer definitions in diffusers 0.42 and
transformers 5), and both against published sizes:

* transformer 6.155e9: Z-Image-Turbo's transformer shards on the Hub total about 24.6 GB in
  float32 (24.6e9 / 4 bytes), and Tongyi-MAI call the model "6B";
* text encoder 4.022e9: the Qwen3-4B model card says 4.0B parameters, 3.6B without embeddings;
* VAE 83.8e6: the FLUX.1 / Z-Image VAE is about 168 MB in bfloat16 (168e6 / 2 bytes).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import psutil
import pytest
import torch

from assets.twin_model import MAX_SEQUENCE_LENGTH, TINY, ZIMAGE_TURBO, build_twin

EXPECTED = {"transformer": 6.155e9, "text_encoder": 4.022e9, "vae": 83.8e6}
"""Parameters per component, from the published sizes in the module docstring."""
HOST_BUDGET_BYTES = 300 * 2**20
"""What building the meta twin may add to this process's RSS (a real-size build would be 20+ GB)."""


def transformer_parameters(c: Mapping[str, Any]) -> int:
    """``ZImageTransformer2DModel`` parameters from its config."""
    dim, head_dim, ffn = c["dim"], c["dim"] // c["n_heads"], int(c["dim"] / 3 * 8)
    adaln = min(dim, 256)  # diffusers' ADALN_EMBED_DIM
    patch = c["all_patch_size"][0] ** 2 * c["all_f_patch_size"][0] * c["in_channels"]
    block = 4 * dim * dim + 2 * head_dim + 3 * dim * ffn + 4 * dim  # q k v out, qk norms, SwiGLU, 4 RMSNorms
    modulation = adaln * 4 * dim + 4 * dim
    blocks = (c["n_layers"] + 2 * c["n_refiner_layers"]) * block + (c["n_layers"] + c["n_refiner_layers"]) * modulation
    embedders = (
        patch * dim + dim  # x_embedder
        + dim * patch + patch + adaln * dim + dim  # final layer and its modulation
        + 256 * 1024 + 1024 + 1024 * adaln + adaln  # timestep MLP (256 frequencies, 1024 hidden)
        + c["cap_feat_dim"] + c["cap_feat_dim"] * dim + dim  # caption RMSNorm + projection
        + 2 * dim  # x and caption pad tokens
    )
    return blocks + embedders


def qwen3_parameters(c: Mapping[str, Any]) -> int:
    """``Qwen3Model`` (no LM head) parameters from its config."""
    hidden, head_dim = c["hidden_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * head_dim, c["num_key_value_heads"] * head_dim
    layer = hidden * q + 2 * hidden * kv + q * hidden + 2 * head_dim + 3 * hidden * c["intermediate_size"] + 2 * hidden
    return c["vocab_size"] * hidden + c["num_hidden_layers"] * layer + hidden


def vae_parameters(c: Mapping[str, Any]) -> int:
    """``AutoencoderKL`` (no quant convs, attention in the mid blocks) parameters from its config."""

    def conv(cin: int, cout: int, k: int = 3) -> int:
        return k * k * cin * cout + cout

    def resnet(cin: int, cout: int) -> int:
        return 2 * cin + conv(cin, cout) + 2 * cout + conv(cout, cout) + (conv(cin, cout, 1) if cin != cout else 0)

    def mid(ch: int) -> int:
        return 2 * resnet(ch, ch) + 2 * ch + 4 * (ch * ch + ch)  # group norm + q k v out

    channels, per_block, latent = c["block_out_channels"], c["layers_per_block"], c["latent_channels"]
    top = channels[-1]
    encoder, cin = conv(c["in_channels"], channels[0]), channels[0]
    for i, cout in enumerate(channels):
        encoder += sum(resnet(cin if j == 0 else cout, cout) for j in range(per_block))
        encoder += conv(cout, cout) if i < len(channels) - 1 else 0  # downsampler
        cin = cout
    encoder += mid(top) + 2 * top + conv(top, 2 * latent)
    decoder, cin = conv(latent, top) + mid(top), top
    for i, cout in enumerate(reversed(channels)):
        decoder += sum(resnet(cin if j == 0 else cout, cout) for j in range(per_block + 1))
        decoder += conv(cout, cout) if i < len(channels) - 1 else 0  # upsampler
        cin = cout
    decoder += 2 * channels[0] + conv(channels[0], c["out_channels"])
    return encoder + decoder


COUNTERS = {"transformer": transformer_parameters, "text_encoder": qwen3_parameters, "vae": vae_parameters}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def twin_and_rss() -> tuple[Any, int]:
    """The real-size twin on meta, and the RSS it added (imports done before measuring)."""
    import diffusers  # noqa: F401  (import costs are not build costs)
    from diffusers import AutoencoderKL, ZImagePipeline, ZImageTransformer2DModel  # noqa: F401
    from transformers import Qwen2Tokenizer, Qwen3Model  # noqa: F401

    process = psutil.Process()
    before = process.memory_info().rss
    pipe = build_twin("meta", torch.bfloat16)
    return pipe, process.memory_info().rss - before


@pytest.mark.parametrize("component", sorted(COUNTERS))
def test_parameter_counts_match_the_config_and_the_published_sizes(twin_and_rss, component: str) -> None:
    pipe, _ = twin_and_rss
    built = count(getattr(pipe, component))
    config = getattr(ZIMAGE_TURBO, component)
    assert built == COUNTERS[component](config), f"{component}: the module differs from the formula"
    assert built == pytest.approx(EXPECTED[component], rel=0.01)


def test_the_transformer_is_the_published_6b_model_and_the_text_encoder_qwen3_4b(twin_and_rss) -> None:
    pipe, _ = twin_and_rss
    assert count(pipe.transformer) == pytest.approx(6e9, rel=0.03)  # "6B" is a rounded figure
    assert count(pipe.text_encoder) == pytest.approx(4.0e9, rel=0.01)
    embeddings = pipe.text_encoder.embed_tokens.weight.numel()
    assert count(pipe.text_encoder) - embeddings == pytest.approx(3.6e9, rel=0.01)  # "3.6B non-embedding"
    assert (pipe.transformer.config.dim, pipe.transformer.config.n_layers, pipe.transformer.config.n_heads) == (
        3840, 30, 30)
    assert pipe.vae.config.latent_channels == 16 and pipe.vae_scale_factor == 8


def test_nothing_is_materialised(twin_and_rss) -> None:
    pipe, _ = twin_and_rss
    for name in COUNTERS:
        module = getattr(pipe, name)
        tensors = [*module.named_parameters(), *module.named_buffers()]
        assert tensors
        assert {t.device.type for _, t in tensors} == {"meta"}, name
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}, name


def test_building_allocates_little_host_memory(twin_and_rss) -> None:
    _, rss_added = twin_and_rss
    assert rss_added < HOST_BUDGET_BYTES, f"building the meta twin added {rss_added / 2**20:.0f} MiB of RSS"


def test_the_text_encoder_runs_the_pipelines_full_sequence_length(twin_and_rss) -> None:
    from diffusers import ZImagePipeline

    pipe, _ = twin_and_rss
    assert inspect.signature(ZImagePipeline.__call__).parameters["max_sequence_length"].default == MAX_SEQUENCE_LENGTH
    assert pipe.tokenizer.model_max_length == MAX_SEQUENCE_LENGTH
    ids = pipe.tokenizer(["studio portrait"], padding="max_length", max_length=MAX_SEQUENCE_LENGTH,
                         truncation=True, return_tensors="pt").input_ids
    assert ids.shape == (1, MAX_SEQUENCE_LENGTH)
    assert int(ids.max()) < pipe.text_encoder.config.vocab_size


def test_a_real_size_twin_is_never_built_on_the_host() -> None:
    with pytest.raises(ValueError, match="'meta' or 'cuda'"):
        build_twin("cpu", torch.float32)


def test_the_scaled_down_twin_materialises_in_the_requested_dtype_reproducibly() -> None:
    pipe = build_twin("cpu", torch.bfloat16, TINY, seed=3)
    for name in COUNTERS:
        params = list(getattr(pipe, name).parameters())
        assert {p.dtype for p in params} == {torch.bfloat16} and {p.device.type for p in params} == {"cpu"}
        assert all(torch.isfinite(p.float()).all() for p in params)
    assert any(p.float().std() > 0 for p in pipe.transformer.parameters())  # initialised, not left empty
    again = build_twin("cpu", torch.bfloat16, TINY, seed=3)
    assert torch.equal(next(pipe.transformer.layers.parameters()), next(again.transformer.layers.parameters()))
    assert torch.get_default_dtype() is torch.float32  # restored after the build
