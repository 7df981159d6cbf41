"""The studio form's values as a worker request: the fields of a job, the seed conventions, and the refusals of a
job the page does not start (in words for its error area)."""

from __future__ import annotations

from typing import Any

import gradio as gr

NO_PROMPT = "Write a prompt first: describe the portrait you want (who, light, background)."


def _optional_int(value: float | None) -> int | None:
    return None if value is None else int(value)


def job_fields(
    prompt: str, negative_prompt: str | None, steps: float | None, guidance: float | None,
    width: float | None, height: float | None, seed: int | None, lora_scale: float, num_images: float,
) -> dict[str, Any]:
    """A worker request (``GenerationRequest`` fields) from UI/API values; None = model default."""
    return {
        "prompt": prompt,
        "negative_prompt": negative_prompt or "",
        "steps": _optional_int(steps),
        "guidance": guidance,
        "width": _optional_int(width),
        "height": _optional_int(height),
        "seed": seed,
        "lora_scale": lora_scale,
        "num_images": int(num_images),
    }


def api_seed(seed: float | None) -> int | None:
    """The API's seed convention: -1 (or nothing) means random."""
    return None if seed is None or seed == -1 else int(seed)


def ui_seed(seed: float | None, randomize: bool) -> int | None:
    """The page's seed: random when the box is ticked or the seed is empty."""
    return None if randomize or seed is None else int(seed)


class FormRefused(Exception):
    """A job the page does not start (no prompt, no usable photo): one message, in plain words, in the error area."""

    heading = "Could not generate"

    def error_area(self) -> Any:
        return gr.Markdown(f"**{self.heading}:** {self}", visible=True)

    def outputs(self) -> tuple[Any, ...]:
        """The page's outputs (gallery, info, summary, error area, model note): the error area only."""
        return gr.skip(), gr.skip(), gr.skip(), self.error_area(), gr.skip()


class RetouchRefused(FormRefused):
    """A retouch without a usable photo."""

    heading = "Could not retouch"
