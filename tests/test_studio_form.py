"""The studio form's rules as pure functions (no processes): sizes snapped to the model's multiple, a retouch's
size from its photo, a preset merged with what the user typed, and the words under a result."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import ExifTags, Image

from webui.images import read_upload
from webui.schema import denoising_steps
from webui.web.studio.config import load_studio_config
from webui.web.studio.form_events import FormEvents
from webui.web.studio.info import info_details, info_summary, model_note
from webui.web.studio.photos import photo_size
from webui.web.studio.preset_choice import FIELDS, apply_subject, choose_preset
from webui.web.studio.sizes import retouch_note, retouch_size, snap_side, snapped_note
from webui.web.worker_client import WorkerClient, WorkerInfoCache

CONFIG = load_studio_config()
TYPED = "an old sailor with a white beard"


def form(**values: Any) -> dict[str, Any]:
    """The page's defaults, with ``values``."""
    width, height = CONFIG.resolutions[CONFIG.defaults.resolution]
    return {**dict.fromkeys(FIELDS, None), "prompt": "", "negative_prompt": "",
            "resolution": CONFIG.defaults.resolution, "width": width, "height": height, "steps": 8,
            "guidance": 0.0, "num_images": 1, "lora_scale": 1.0, **values}


# ---------------------------------------------------------------------------- sizes
def test_a_size_kept_as_typed_is_not_written_back() -> None:
    """The page's answer to a typed width must not put back the height as it was when the width was typed: the
    user may have typed the height meanwhile (it then made 256×1024 of a 256×256 the user asked for)."""
    events = FormEvents(CONFIG, WorkerInfoCache(WorkerClient("http://127.0.0.1:9", max_attempts=1)))
    assert asyncio.run(events.size_typed(256, 1024))[:2] == (gr.skip(), gr.skip())  # no change: nothing written
    width, height, _, note = asyncio.run(events.size_typed(600, 256))
    assert (width, height) == (608, gr.skip())  # only the side that changed
    assert "608" in note.value


def test_a_typed_size_is_snapped_within_the_limits_and_the_page_says_so() -> None:
    assert (snap_side(600, 16), snap_side(900, 16)) == (608, 896)
    assert (snap_side(100, 16), snap_side(5000, 16), snap_side(2047, 8)) == (256, 2048, 2048)
    note = snapped_note((600, 900), (608, 896), 16)
    assert "608×896" in note and "600×900" in note and "multiples of 16" in note
    assert snapped_note((608, 896), (608, 896), 16) == ""


def test_a_retouch_keeps_its_photos_size_within_the_models_limits() -> None:
    assert retouch_size((1200, 1600), 16) == (1200, 1600)
    assert retouch_size((4000, 3000), 16) == (2048, 1536)  # scaled to fit 2048, aspect kept
    assert retouch_size((1001, 1333), 16) == (1008, 1328)  # each side to its nearest multiple
    assert retouch_size((20, 30), 16) == (16, 32)  # never below one multiple
    assert "1200×1600" in retouch_note((1200, 1600), 16) and "multiples of 16" in retouch_note(None, 16)


def test_a_phone_photo_turned_by_its_exif_gets_its_upright_size(tmp_path: Path) -> None:
    """A phone stores a portrait photo 4000x3000 with "turn a quarter" in its EXIF: the Retouch tab's note says the
    upright size, as the worker (which applies the orientation) makes it."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (400, 300)).save(path, exif=exif)
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (400, 300)).save(plain)
    assert (photo_size(str(path)), photo_size(str(plain))) == ((300, 400), (400, 300))
    with read_upload(path, 10**6, 10**6) as upright:  # what the worker is sent
        assert upright.size == photo_size(str(path))


# ---------------------------------------------------------------------------- presets
def test_a_prompt_typed_before_a_preset_is_merged_as_its_subject() -> None:
    choice = choose_preset(CONFIG, "Social avatar", "", form(prompt=TYPED), None)
    assert choice.values["prompt"].startswith(f"close-up portrait of {TYPED},")
    assert "yours kept in it" in choice.note and "size Square 1024×1024" in choice.note and "4 images" in choice.note
    assert choice.undo["prompt"] == TYPED and choice.undo["num_images"] == 1
    assert "steps" not in choice.values  # what the preset leaves out keeps its value


def test_a_prompt_replaced_by_a_preset_is_said_and_can_be_undone() -> None:
    first = choose_preset(CONFIG, "ID photo", "", form(), None)
    edited = first.values["prompt"] + ", film grain"
    second = choose_preset(CONFIG, "Social avatar", "", form(prompt=edited), first.memo)
    assert "yours replaced" in second.note and second.undo["prompt"] == edited
    same = choose_preset(CONFIG, "ID photo", "", form(**first.values), first.memo)
    assert same.values == {} and "nothing changed" in same.note


def test_a_subject_typed_after_a_preset_goes_into_its_prompt() -> None:
    choice = choose_preset(CONFIG, "ID photo", "", form(), None)
    edited = choice.values["prompt"] + ", film grain"
    prompt, memo = apply_subject(CONFIG, choice.memo, "a young chef", edited)
    assert prompt is not None and prompt.startswith("official ID photo of a young chef,") and prompt.endswith("grain")
    back, _ = apply_subject(CONFIG, memo, "", prompt)
    assert back is not None and CONFIG.preset("ID photo").subject in back
    assert apply_subject(CONFIG, None, "a young chef", TYPED) == (None, None)  # no preset: nothing to fill
    carried = choose_preset(CONFIG, "E-commerce model", "", form(prompt=prompt), memo)
    assert "a young chef" in carried.values["prompt"]  # the subject follows to the next preset


def test_a_preset_chosen_twice_over_a_typed_prompt_still_says_it_kept_it() -> None:
    first = choose_preset(CONFIG, "Social avatar", "", form(prompt=TYPED), None)
    again = choose_preset(CONFIG, "Social avatar", "", form(prompt=TYPED), first.memo)  # a second event, same inputs
    assert again.values["prompt"] == first.values["prompt"] and TYPED in again.values["prompt"]
    assert "yours kept in it" in again.note, again.note


def test_a_subject_typed_letter_by_letter_replaces_itself_not_a_word_that_contains_it() -> None:
    choice = choose_preset(CONFIG, "ID photo", "", form(), None)
    prompt, memo = choice.values["prompt"], choice.memo
    for typed in ("a", "a ", "a y", "a young chef"):  # the Subject box's change events, one per keystroke
        changed, memo = apply_subject(CONFIG, memo, typed, prompt)
        prompt = changed or prompt
    assert prompt.startswith("official ID photo of a young chef,"), prompt
    edited = "a portrait, " + prompt.replace("official ID photo of ", "")  # the template's start rewritten by hand
    again, _ = apply_subject(CONFIG, memo, "a baker", edited)
    assert again == "a portrait, a baker," + edited.split("a young chef,", 1)[1], again


# ---------------------------------------------------------------------------- words under a result
INFO = {"seed": 7, "seeds": [7], "width": 1200, "height": 1600, "steps": 8, "guidance": 0.0, "lora_scale": 1.0,
        "num_images": 1, "mode": "retouch", "strength": 0.6, "prompt": "softer light", "negative_prompt": "",
        "model": "demo", "worker_id": "node2", "web_node": "node1", "attempts": 1, "job_id": "j_abc",
        "timings": {"queue_ms": 10.0, "generate_ms": 900.0, "total_ms": 950.0, "web_ms": 1200.0}}


def test_the_summary_says_the_steps_run_and_no_machine_names() -> None:
    assert denoising_steps(8, 0.6) == 5 and denoising_steps(8, None) == 8
    summary = info_summary(INFO)
    assert "5 of 8 steps (strength 0.6)" in summary and "1200×1600" in summary
    assert "node" not in summary and "worker" not in summary and "j_abc" not in summary
    one = info_summary({**INFO, "mode": "text2img", "strength": None, "steps": 1})
    assert "1 step ·" in one and "1 steps" not in one
    details = info_details(INFO)
    assert "**Worker:** `node2`" in details and "**Web front:** `node1`" in details and "`j_abc`" in details
    assert "{" not in details  # words, not JSON


def test_the_demo_note_names_no_command_line_flags() -> None:
    note = model_note("demo", "front")
    assert "not faces" in note and "--model" not in note
