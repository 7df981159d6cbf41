"""What the page and the API say about a finished generation: the info dict, its one-line summary, the model note.

The worker path (``WorkerClient``) and the jobs path (``JobRunner``) build the same dict from the worker's
``GenerationResult``, so an API client and the page see the same keys and words whichever path ran the job.
"""

from __future__ import annotations

from typing import Any

from webui.schema import GenerationResult, image_seeds
from webui.web.worker_client import JobOutcome

__all__ = ["DEMO_MODEL_NOTE", "generation_info", "image_captions", "info_summary", "model_note", "result_info"]

DEMO_MODEL_NOTE = (
    "The offline **demo** model is a tiny untrained network: it draws abstract colour fields, "
    "not faces. Start the workers with `--model awportrait-z` (or another model) for portraits."
)


def result_info(result: GenerationResult, attempts: int, elapsed_ms: float, web_node: str) -> dict[str, Any]:
    """The info dict shown under the result and returned by the API."""
    params = result.params
    return {
        "seed": result.seed,
        "seeds": result.seeds or image_seeds(result.seed, params.num_images),
        "width": params.width,
        "height": params.height,
        "steps": params.steps,
        "guidance": params.guidance,
        "lora_scale": params.lora_scale,
        "num_images": params.num_images,
        "mode": params.mode,
        "strength": params.strength,
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt,
        "model": result.model,
        "worker_id": result.worker_id,
        "web_node": web_node,
        "attempts": attempts,
        "timings": {**result.timings.model_dump(), "web_ms": round(elapsed_ms, 1)},
    }


def generation_info(outcome: JobOutcome, web_node: str) -> dict[str, Any]:
    """The info dict of a job the web front ran on the workers itself."""
    return result_info(outcome.result, outcome.attempts, outcome.elapsed_ms, web_node)


def image_captions(info: dict[str, Any]) -> list[str]:
    """Each image's caption: its number and its own seed (the seed that makes it again alone)."""
    return [f"#{index} · seed {seed}" for index, seed in enumerate(info["seeds"], start=1)]


def info_summary(info: dict[str, Any]) -> str:
    """One readable line about a generation (Markdown)."""
    seconds = info["timings"]["web_ms"] / 1000
    retried = f" · {info['attempts']} attempts" if info["attempts"] > 1 else ""
    seeds = f" (one per image, to `{info['seeds'][-1]}`)" if len(info.get("seeds", ())) > 1 else ""
    return (
        f"**Seed** `{info['seed']}`{seeds} · **{info['width']}×{info['height']}** · {info['steps']} steps · "
        f"guidance {info['guidance']:g} · worker `{info['worker_id']}` · node `{info['web_node']}` · "
        f"{seconds:.1f} s{retried}"
    )


def model_note(model: str | None, web_node: str) -> str:
    """Which model the workers serve (Markdown), with the demo model's caveat."""
    if model is None:
        return f"Model: **workers ready** (named after the first job) · node `{web_node}`"
    note = f"Model: **{model}** · node `{web_node}`"
    if model == "demo":
        note += f"\n\n{DEMO_MODEL_NOTE}"
    return note
