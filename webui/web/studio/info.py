"""What the page and the API say about a finished generation: the info dict, its one-line summary, the model note.

The worker path (``WorkerClient``) and the jobs path (``JobRunner``) build the same dict from the worker's
``GenerationResult``, so an API client and the page see the same keys and words whichever path ran the job.
"""

from __future__ import annotations

from typing import Any

from webui.schema import GenerationResult, denoising_steps, image_seeds
from webui.web.worker_client import JobOutcome
from webui.words import plural

__all__ = ["DEMO_MODEL_NOTE", "DENOISING", "generation_info", "image_captions", "info_details", "info_summary",
           "model_note", "result_info"]

DEMO_MODEL_NOTE = (
    "The offline **demo** model is a tiny untrained network: it draws abstract colour fields, "
    "not faces. For portraits, your administrator starts the workers with a portrait model."
)

DENOISING = "Denoising"
"""The progress bar's words while a job runs (beside its "3/8 steps"): which worker runs it is for the details
view, not for the bar."""


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


def steps_words(info: dict[str, Any]) -> str:
    """The denoising steps a generation ran per image, as its progress bar counted them: a retouch runs only the
    last part of its steps (``strength``), e.g. ``5 of 8 steps (strength 0.6)``."""
    strength = info.get("strength") if info.get("mode") == "retouch" else None
    run = denoising_steps(info["steps"], strength)
    if run == info["steps"]:
        return plural(run, "step")
    return f"{run} of {plural(info['steps'], 'step')} (strength {strength:g})"


def info_summary(info: dict[str, Any]) -> str:
    """One readable line about a generation (Markdown): what a studio needs to make it again; which machines ran
    it is in ``info_details``."""
    seconds = info["timings"]["web_ms"] / 1000
    retried = f" · {info['attempts']} attempts" if info["attempts"] > 1 else ""
    seeds = f" (one per image, to `{info['seeds'][-1]}`)" if len(info.get("seeds", ())) > 1 else ""
    return (
        f"**Seed** `{info['seed']}`{seeds} · **{info['width']}×{info['height']}** · {steps_words(info)} · "
        f"guidance {info['guidance']:g} · {seconds:.1f} s{retried}"
    )


def info_details(info: dict[str, Any] | None) -> str:
    """The "Generation details" view (Markdown): every setting, and where and how long the job ran."""
    if not info or "seed" not in info:
        return "Details of your next portrait appear here."
    timings = info.get("timings") or {}
    mode = "Retouch" if info.get("mode") == "retouch" else "Create"
    lines = [
        f"- **Prompt:** {info.get('prompt') or '—'}",
        f"- **Negative prompt:** {info.get('negative_prompt') or '—'}",
        f"- **Mode:** {mode} · **Size:** {info['width']}×{info['height']} · **Steps:** {steps_words(info)} · "
        f"**Guidance:** {info['guidance']:g} · **LoRA scale:** {info.get('lora_scale', 1.0):g}",
        f"- **Seeds:** {', '.join(str(seed) for seed in info.get('seeds') or [info['seed']])}",
        f"- **Model:** {info.get('model') or 'unknown'}",
        f"- **Worker:** `{info.get('worker_id')}` · **Web front:** `{info.get('web_node')}` · "
        f"**Attempts:** {info.get('attempts', 1)}",
        f"- **Time:** {timings.get('queue_ms', 0) / 1000:.1f} s waiting, {timings.get('generate_ms', 0) / 1000:.1f} s "
        f"generating, {timings.get('web_ms', 0) / 1000:.1f} s in all",
    ]
    if info.get("job_id"):
        lines.append(f"- **Job:** `{info['job_id']}`")
    return "\n".join(lines)


def model_note(model: str | None, web_node: str) -> str:
    """Which model the workers serve (Markdown), with the demo model's caveat."""
    if model is None:
        return f"Model: **workers ready** (named after the first job) · node `{web_node}`"
    note = f"Model: **{model}** · node `{web_node}`"
    if model == "demo":
        note += f"\n\n{DEMO_MODEL_NOTE}"
    return note
