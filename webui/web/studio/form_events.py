"""The studio form's own events (no job): a preset chosen and undone, a Subject typed, a typed size snapped, the
Retouch tab's size note and the controls that apply to each tab.

The rules are pure functions (``preset_choice``, ``sizes``); this module turns them into Gradio updates.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import gradio as gr

from webui.schema import Limits
from webui.web.studio.config import StudioConfig
from webui.web.studio.photos import photo_size
from webui.web.studio.preset_choice import FIELDS, apply_subject, choose_preset
from webui.web.studio.sizes import retouch_note, retouch_size, snap_side, snapped_note
from webui.web.worker_client import WorkerInfoCache

logger = logging.getLogger(__name__)


async def size_rules(worker_info: WorkerInfoCache) -> tuple[int, int]:
    """(size multiple, largest side) of the workers' model; the default family's before a worker answers."""
    info = await worker_info.get()
    if isinstance(info, str):
        limits = Limits()
        return limits.family.size_multiple, limits.max_side
    return info.size_multiple, info.limits.max_side


async def output_size(worker_info: WorkerInfoCache, photo: str) -> tuple[int, int]:
    """The size a retouch of the photo at ``photo`` makes (``sizes.retouch_size``)."""
    multiple, max_side = await size_rules(worker_info)
    return retouch_size(await asyncio.to_thread(photo_size, photo), multiple, max_side)


def size_pick_js(config: StudioConfig) -> str:
    """The Resolution menu's pick, run in the browser: ``(name, width, height) => [width, height]``, a named size's
    sides, else (Custom) the sliders as they are."""
    sides = json.dumps({name: list(size) for name, size in config.resolutions.items()}, ensure_ascii=False)
    return f"(name, width, height) => ({sides})[name] ?? [width, height]"


class FormEvents:
    """What the form does on its own, with the studio's presets and the workers' size rules."""

    def __init__(self, config: StudioConfig, worker_info: WorkerInfoCache) -> None:
        self.config = config
        self.worker_info = worker_info

    def preset_chosen(self, name: str | None, subject: str, *values: Any) -> tuple[Any, ...]:
        """(each of ``FIELDS``, note, memo, undo values, Undo button) for the chosen preset; ``values`` are the
        form's ``FIELDS`` then the memo."""
        *form, memo = values
        choice = choose_preset(self.config, name, subject or "", dict(zip(FIELDS, form, strict=True)), memo)
        if not choice.values and name is None:
            return (*(gr.skip(),) * len(FIELDS), gr.skip(), memo, gr.skip(), gr.skip())
        undo = {**choice.undo, "preset": (memo or {}).get("preset"), "memo": memo}
        return (*(choice.values.get(key, gr.skip()) for key in FIELDS), choice.note, choice.memo, undo,
                gr.Button(visible=bool(choice.undo)))

    def undo(self, undo: dict[str, Any] | None) -> tuple[Any, ...]:
        """(each of ``FIELDS``, preset menu, note, memo, undo values, Undo button): the form as it was."""
        undo = undo or {}
        fields = tuple(undo[key] if key in undo else gr.skip() for key in FIELDS)
        return (*fields, undo.get("preset"), "Preset undone: the form is as it was.", undo.get("memo"), {},
                gr.Button(visible=False))

    def subject_typed(self, subject: str, prompt: str, memo: dict[str, Any] | None) -> tuple[Any, Any]:
        """(prompt, memo): the new subject in the prompt, whenever it is typed."""
        new_prompt, memo = apply_subject(self.config, memo, subject or "", prompt or "")
        return (gr.skip() if new_prompt is None else new_prompt), memo

    async def size_typed(self, width: float, height: float) -> tuple[Any, ...]:
        """(width, height, resolution, note): a typed size as the model makes it, shown in the boxes. A side kept as
        typed is not written back: the answer to the width's event comes after the height was typed too, and would
        put the old height back (the next event then took that for the user's)."""
        if width is None or height is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        multiple, max_side = await size_rules(self.worker_info)
        snapped = snap_side(width, multiple, max_side), snap_side(height, multiple, max_side)
        note = snapped_note((width, height), snapped, multiple)
        changed = (gr.skip() if side == typed else side for typed, side in zip((width, height), snapped, strict=True))
        return (*changed, self.config.resolution_name(*snapped), gr.Markdown(note, visible=bool(note)))

    async def photo_chosen(self, photo: str | None) -> str:
        """The Retouch tab's note: the size the result will have."""
        multiple, max_side = await size_rules(self.worker_info)
        if photo is None:
            return retouch_note(None, multiple, max_side)
        try:
            return retouch_note(await output_size(self.worker_info, photo), multiple, max_side)
        except OSError as exc:  # not an image: the Retouch button says why
            logger.info("retouch photo unreadable: %s", exc)
            return retouch_note(None, multiple, max_side)

    @staticmethod
    def tab_chosen(retouch: bool) -> Any:
        """The size controls: shown for Create, hidden for Retouch (its size is the photo's)."""
        return gr.Column(visible=not retouch)
