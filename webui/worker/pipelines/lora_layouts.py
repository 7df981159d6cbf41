"""The demo LoRA in the key layouts that real Z-Image-Turbo LoRAs are published in.

AWPortrait-Z and most Z-Image-Turbo LoRAs are not in the diffusers/PEFT layout the demo LoRA is
built in (``layers.0.attention.to_q.lora_A.weight``) but in one of these, which diffusers 0.42's
``ZImageLoraLoaderMixin`` converts when loading (``_convert_non_diffusers_z_image_lora_to_diffusers``):

* ``comfyui``: ``diffusion_model.layers.0.attention.to_q.lora_A.weight`` / ``lora_B`` (ai-toolkit,
  ComfyUI), no alpha;
* ``comfyui-kohya``: ``diffusion_model.layers.0.attention.to_q.lora_down.weight`` / ``lora_up`` / ``alpha``
  (ComfyUI's own LoRA files);
* ``kohya``: ``lora_unet_layers_0_attention_to_q.lora_down.weight`` / ``lora_up`` / ``alpha`` (sd-scripts).

The math is identical to the diffusers layout. A ``lora_A``/``lora_B`` file has no alpha: the
delta is ``B @ A``, as in the demo LoRA (built with ``lora_alpha = rank``). A kohya-style file's
delta is ``up @ down * alpha / rank``; these files store ``alpha = rank * KOHYA_ALPHA_RATIO`` (0.5,
as trainers often use alpha < rank) and ``down = A / KOHYA_ALPHA_RATIO``, so the delta is
``B @ A`` again. The ratio is a power of two, so the loader's ``down * alpha / rank`` gives back
``A`` bit for bit, and a loader that ignored ``alpha`` would double every delta.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KOHYA_ALPHA_RATIO = 0.5
"""``alpha / rank`` in the kohya-style files (a power of two: scaling by it is exact)."""
_A, _B = ".lora_A.weight", ".lora_B.weight"


@dataclass(frozen=True)
class LoraLayout:
    """How one LoRA file format names a module's LoRA tensors."""

    prefix: str
    """Before the module name: ``diffusion_model.`` or ``lora_unet_``."""
    underscored: bool
    """Module names with ``_`` instead of ``.`` (``layers_0_attention_to_q``)."""
    kohya_weights: bool
    """``lora_down``/``lora_up`` plus ``alpha`` instead of ``lora_A``/``lora_B``."""


LAYOUTS = {
    "comfyui": LoraLayout(prefix="diffusion_model.", underscored=False, kohya_weights=False),
    "comfyui-kohya": LoraLayout(prefix="diffusion_model.", underscored=False, kohya_weights=True),
    "kohya": LoraLayout(prefix="lora_unet_", underscored=True, kohya_weights=True),
}
"""The layouts the demo LoRA is also written in, by the name of its file (``<name>.safetensors``)."""


def convert_lora(peft_state: dict[str, torch.Tensor], layout: LoraLayout) -> dict[str, torch.Tensor]:
    """``peft_state`` (diffusers/PEFT keys without the ``transformer.`` prefix) in ``layout``, same delta."""
    unknown = [key for key in peft_state if not key.endswith((_A, _B))]
    if unknown:
        raise ValueError(f"not a plain LoRA state dict: {unknown[:3]}")
    converted: dict[str, torch.Tensor] = {}
    for key, down in peft_state.items():
        if not key.endswith(_A):
            continue
        module = key.removesuffix(_A)
        up = peft_state[module + _B]
        name = layout.prefix + (module.replace(".", "_") if layout.underscored else module)
        if layout.kohya_weights:
            rank = down.shape[0]
            converted[f"{name}.lora_down.weight"] = down / KOHYA_ALPHA_RATIO
            converted[f"{name}.lora_up.weight"] = up
            converted[f"{name}.alpha"] = torch.tensor(rank * KOHYA_ALPHA_RATIO)
        else:
            converted[name + _A] = down
            converted[name + _B] = up
    return converted
