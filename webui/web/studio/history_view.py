"""How the studio's History shows jobs: a small summary per job (what the page keeps, never the job's images or
photo), its card (thumbnail, status, prompt, preset, size, time), its full settings, and the form values that
"Use these settings" puts back."""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from webui.schema import image_seeds
from webui.web.jobs_wire import PRESET, SUCCEEDED, JobSnapshot, job_path

CARD = "width:168px;font-size:0.8em;text-align:left"
THUMB = "width:160px;height:160px;object-fit:cover;border-radius:6px;display:block;background:#8882"
LINE = "overflow:hidden;text-overflow:ellipsis;white-space:nowrap"
"""The cards' look, inline (the page's own stylesheet is not this module's)."""
PROMPT_CHARS = 120
"""A card's prompt is cut to this many characters."""
SETTINGS = ("prompt", "negative_prompt", "steps", "guidance", "width", "height", "seed", "lora_scale", "num_images",
            "strength")
"""The settings a job's details show and "Use these settings" restores (the seed: the one the job drew)."""
RESOLUTION = "resolution"
"""The form's Resolution menu, which follows the size a job's settings put in the form."""


def summary(job: JobSnapshot) -> dict[str, Any]:
    """What a history card needs: a few short fields (the page keeps these, not the job)."""
    first = job.results[0] if job.results else None
    width = (first.width if first else None) or job.input.get("width")
    height = (first.height if first else None) or job.input.get("height")
    return {"id": job.id, "status": job.status, "prompt": str(job.input.get("prompt", ""))[:PROMPT_CHARS],
            "preset": job.input.get(PRESET) or "", "size": f"{width}×{height}" if width and height else "",
            "images": len(job.results), "created_at": job.created_at.isoformat() if job.created_at else "",
            "thumbnail": job_path(job.id, "thumbnails", 0) if job.status == SUCCEEDED and job.results else None}


def when(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if iso else ""


def card(entry: dict[str, Any]) -> str:
    """One job's card (HTML; every text escaped). The thumbnail is the jobs service's, cached by the browser."""
    text = {name: html.escape(str(value)) for name, value in entry.items() if value is not None}
    picture = (f'<img src="{text["thumbnail"]}" alt="" loading="lazy" style="{THUMB}">'
               if entry.get("thumbnail") else f'<div style="{THUMB}"></div>')
    preset = f" · {text['preset']}" if entry.get("preset") else ""
    return (f'<div class="history-card" data-job="{text["id"]}" style="{CARD}">{picture}'
            f'<div class="history-status" style="{LINE}">{text["status"]}{preset} · {text["size"]}</div>'
            f'<div class="history-prompt" style="{LINE}">{text["prompt"]}</div>'
            f'<div class="history-time">{html.escape(when(entry["created_at"]))}</div></div>')


def settings(job: JobSnapshot) -> dict[str, Any]:
    """The job's settings: its input (without a retouch photo), the seed it drew, its preset; a retouch is one
    whether its photo is kept or was removed by the account's retention (the worker's ``mode`` says so)."""
    params = (job.generation or {}).get("params") or {}
    kept = {name: params.get(name, job.input.get(name)) for name in SETTINGS}
    kept["seed"] = (job.generation or {}).get("seed", job.input.get("seed"))
    retouch = bool(job.input.get("init_image")) or params.get("mode") == "retouch"
    return {**{name: value for name, value in kept.items() if value is not None},
            "preset": job.input.get(PRESET), "retouch": retouch}


def job_seeds(job: JobSnapshot) -> list[int | None]:
    """Each result's own seed (the worker's ``seeds``, else ``seed + i``); None where the job kept no seed."""
    generation = job.generation or {}
    seeds = generation.get("seeds") or []
    if len(seeds) != len(job.results):
        seed = generation.get("seed", job.input.get("seed"))
        seeds = image_seeds(seed, len(job.results)) if isinstance(seed, int) else [None] * len(job.results)
    return list(seeds)


def details(job: JobSnapshot) -> str:
    """The opened job, in Markdown: status, time, preset, download links (paths on the site), the error if any."""
    lines = [f"**Job `{job.id}`** · {job.status}"
             + (f" · {when(job.created_at.isoformat())}" if job.created_at else "")
             + (f" · preset {job.input[PRESET]}" if job.input.get(PRESET) else "")]
    if job.results:
        lines.append("Download: " + " · ".join(f"[image {index + 1}]({result.url})"
                                                for index, result in enumerate(job.results)))
    if job.error:
        lines.append(f"**Error:** {job.error}")
    return "\n\n".join(lines)


def form_values(chosen: dict[str, Any], form: tuple[str, ...],
                resolution_name: Callable[[int, int], str] | None = None) -> list[Any]:
    """The form's values (one per name in ``form``; None where the job has none) from a job's ``settings``: the
    job's own seed, not a random one; the Resolution menu's choice of its size (``resolution_name``: a size's
    choice, or Custom) when it has one."""
    values = {**chosen, "randomize": False}
    if resolution_name is not None and chosen.get("width") and chosen.get("height"):
        values[RESOLUTION] = resolution_name(int(chosen["width"]), int(chosen["height"]))
    return [values.get(name) for name in form]


def day_range(since: str, until: str) -> dict[str, str]:
    """The listing's date filter from the page's two dates (``YYYY-MM-DD``, either blank; ``until`` inclusive);
    ``ValueError`` in words for a date that is not one."""
    query = {}
    for name, text, extra in (("since", since, 0), ("until", until, 1)):
        if text and text.strip():
            try:
                day = date.fromisoformat(text.strip())
            except ValueError:
                raise ValueError(f"“{text.strip()}” is not a date: write it as YYYY-MM-DD, e.g. 2026-12-05.") from None
            query[name] = (day + timedelta(days=extra)).isoformat()
    return query
