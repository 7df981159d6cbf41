"""Choosing a studio preset, and typing a Subject, without losing what the user typed.

Pure functions over the form's values (a dict keyed by ``FIELDS``) and a small memo of the last preset applied
(kept in the page's ``gr.State``):

- A prompt the user typed before any preset becomes the preset's subject (merged into its template); a prompt
  that would be replaced otherwise is named in the note, and every change can be undone (``Choice.undo``).
- The note says what the preset changed (size, image count, ...), beside the menu: the controls themselves may
  be below the fold.
- A Subject typed after the preset is put into the prompt, in place of the subject it had.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from webui.web.studio.config import StudioConfig, StudioPreset

FIELDS = ("prompt", "negative_prompt", "resolution", "width", "height", "steps", "guidance", "num_images",
          "lora_scale")
"""The form values a preset may set, in the order of the page's outputs."""


@dataclass(frozen=True)
class Choice:
    """What choosing a preset does: the new ``values`` (only those that change), the ``note`` that says so, the
    previous values for Undo, and the ``memo`` to keep."""

    values: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    undo: dict[str, Any] = field(default_factory=dict)
    memo: dict[str, Any] | None = None


def _preset_values(config: StudioConfig, preset: StudioPreset, prompt: str) -> dict[str, Any]:
    values: dict[str, Any] = {"prompt": prompt, "negative_prompt": preset.negative_prompt}
    if preset.resolution:
        values["resolution"] = preset.resolution
        values["width"], values["height"] = config.resolutions[preset.resolution]
    for name in ("steps", "guidance", "num_images", "lora_scale"):
        if getattr(preset, name) is not None:
            values[name] = getattr(preset, name)
    return values


def _same(old: Any, new: Any) -> bool:
    if isinstance(new, int | float) and not isinstance(new, bool) and old is not None:
        try:
            return float(old) == float(new)
        except (TypeError, ValueError):
            return False
    return (old or "") == (new or "")


def changed_words(changed: dict[str, Any]) -> list[str]:
    """The changes in a studio's words: ``size 768×1024``, ``2 images``, ``LoRA scale 0.9``..."""
    words = []
    if "negative_prompt" in changed:
        words.append("negative prompt")
    if "width" in changed or "height" in changed or "resolution" in changed:
        size = changed.get("resolution") or f"{changed.get('width')}×{changed.get('height')}"
        words.append(f"size {size}")
    if "num_images" in changed:
        count = int(changed["num_images"])
        words.append(f"{count} image{'' if count == 1 else 's'}")
    for name, label in (("steps", "steps"), ("guidance", "guidance"), ("lora_scale", "LoRA scale")):
        if name in changed:
            words.append(f"{label} {changed[name]:g}")
    return words


def choose_preset(config: StudioConfig, name: str | None, subject: str, form: dict[str, Any],
                  memo: dict[str, Any] | None) -> Choice:
    """Apply preset ``name`` to ``form``. The subject is the Subject box's text; else the prompt the user typed
    before any preset (merged: it is kept, inside the preset's prompt); else the subject carried from the last
    preset; else the preset's own example subject."""
    preset = config.preset(name or "")
    if preset is None:
        return Choice(memo=memo)
    prompt = (form.get("prompt") or "").strip()
    typed = bool(prompt) and (memo is None or form.get("prompt") != memo.get("prompt"))
    own = subject.strip()
    merged = typed and not own and memo is None
    if merged:
        own = prompt
    elif not own and memo is not None:
        own = memo.get("own", "")
    used = own or preset.subject
    new = _preset_values(config, preset, preset.render_prompt(used))
    changed = {key: value for key, value in new.items() if not _same(form.get(key), value)}
    undo = {key: form.get(key) for key in changed}
    said = [f"Preset **{preset.name}** set"]
    if merged or (typed and own == prompt):  # the typed prompt is the subject (now, or carried by the memo)
        said.append("the prompt, with yours kept in it as the subject")
    elif typed and "prompt" in changed:
        said.append("the prompt (yours replaced: Undo brings it back)")
    elif "prompt" in changed:
        said.append("the prompt")
    said += changed_words(changed)
    note = f"{said[0]}: {', '.join(said[1:])}." if len(said) > 1 else f"{said[0]}: nothing changed."
    if preset.description:
        note = f"{preset.description}\n\n{note}"
    return Choice(changed, note, undo, {"preset": preset.name, "own": own, "subject": used, "prompt": new["prompt"]})


def apply_subject(config: StudioConfig, memo: dict[str, Any] | None, subject: str,
                  prompt: str) -> tuple[str | None, dict[str, Any] | None]:
    """(new prompt or None to keep it, new memo) after the Subject box changed: the subject the last preset put
    in the prompt is replaced by the new one (the preset's example subject when the box is emptied); a prompt
    rewritten since, without that subject, is made again from the preset."""
    preset = config.preset((memo or {}).get("preset") or "")
    if memo is None or preset is None:
        return None, memo
    own = subject.strip()
    used = own or preset.subject
    if used == memo.get("subject"):
        return None, memo
    new_prompt = with_subject(preset, prompt, memo.get("subject") or "", used)
    return new_prompt, {**memo, "own": own, "subject": used, "prompt": new_prompt}


def with_subject(preset: StudioPreset, prompt: str, old: str, new: str) -> str:
    """``prompt`` with the subject ``old`` replaced by ``new``: where the preset's template put it, else its first
    whole-word occurrence (never inside a word: "a" is not the "a" of "portrait"), else the preset's prompt anew."""
    before = preset.prompt.partition("{subject}")[0]
    if old and prompt.startswith(before + old):
        return before + new + prompt[len(before + old):]
    found = re.search(rf"(?<!\w){re.escape(old)}(?!\w)", prompt) if old else None
    if found is not None:
        return prompt[:found.start()] + new + prompt[found.end():]
    return preset.render_prompt(new)
