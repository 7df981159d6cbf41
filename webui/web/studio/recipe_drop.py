"""The studio page's "Make an image again": drop a PNG the studio made, and the form takes its recipe.

Every result PNG carries its recipe (``webui.recipe``). Dropped here, it fills the form: prompt, negative prompt,
steps, guidance, size, the image's own seed (not random), LoRA scale, one image, a retouch's strength. Generate
then makes the same image again (a retouch needs its photo again: the note names it by SHA-256).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from webui.recipe import RecipeError, read_recipe

logger = logging.getLogger(__name__)

FIELDS = ("prompt", "negative_prompt", "steps", "guidance", "width", "height", "seed", "randomize", "lora_scale",
          "num_images", "strength", "resolution")
"""What a recipe restores, in the order of ``RecipeDrop.wire``'s ``form`` (then the drop's note)."""


def restore_values(path: str | None, max_bytes: int, resolution_name: Callable[[int, int], str]) -> tuple[Any, ...]:
    """The form's values from the recipe of the PNG at ``path`` (``FIELDS``, then the note); a warning and nothing
    changed when it has none."""
    if path is None:
        return (*(gr.skip(),) * len(FIELDS), gr.skip())
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            raise RecipeError(f"the file has {size} bytes, more than the {max_bytes}-byte limit")
        recipe = read_recipe(Path(path).read_bytes(), max_bytes)
    except (RecipeError, OSError) as exc:
        why = str(exc) if isinstance(exc, RecipeError) else "the file could not be read"
        logger.info("recipe drop refused: %s", why)
        gr.Warning(f"This file cannot restore the form: {why}.", title="Make again")
        return (*(gr.skip(),) * len(FIELDS), f"**Not restored:** {why}.")
    note = f"Restored image #{recipe.batch_index + 1} of {recipe.batch_size} (seed `{recipe.seed}`, {recipe.model})."
    if recipe.mode == "retouch":
        note += f" It was a retouch: upload the same photo (SHA-256 `{recipe.input_sha256}`) and press Retouch."
    strength = recipe.strength if recipe.strength is not None else gr.skip()
    return (recipe.prompt, recipe.negative_prompt, recipe.steps, recipe.guidance, recipe.width, recipe.height,
            recipe.seed, False, recipe.lora_scale, 1, strength, resolution_name(recipe.width, recipe.height), note)


@dataclass
class RecipeDrop:
    """The drop area and its note, placed where ``build`` is called; ``wire`` connects them to the form."""

    file: gr.File
    note: gr.Markdown

    @classmethod
    def build(cls) -> RecipeDrop:
        with gr.Accordion("Make an image again", open=False, elem_id="recipe"):
            file = gr.File(label="Drop a PNG from this studio", file_types=[".png"], type="filepath",
                           elem_id="recipe-drop", height=120)
            note = gr.Markdown("Every result carries its recipe: drop one here and the form takes it.",
                               elem_id="recipe-note")
        return cls(file, note)

    def wire(self, form: list[gr.components.Component], max_bytes: int,
             resolution_name: Callable[[int, int], str]) -> None:
        """On a drop, fill ``form`` (the components of ``FIELDS``, in that order). Call it after the job events:
        HAProxy counts those by their index (``JOB_EVENT_INDICES``)."""

        def restore(path: str | None) -> tuple[Any, ...]:
            return restore_values(path, max_bytes, resolution_name)

        self.file.upload(restore, [self.file], [*form, self.note], api_visibility="private", queue=False)
