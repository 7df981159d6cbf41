"""The History section of the studio page: filters, the job cards with "More", and the opened job (settings,
"Use these settings", download links, each image with "Make this image again" and "Retouch this", a Delete that
asks once more). Its events are ``HistoryPanel``'s and its ``images``'."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
from gradio.components import Component

from webui.web.studio.history import MAX_SHOWN, NOTHING, HistoryPanel
from webui.web.studio.history_images import PRESS_GENERATE, PRESS_RETOUCH, SHOW_PHOTO


@dataclass(frozen=True)
class FormTargets:
    """What the History's buttons fill: ``form`` (the components ``panel.form`` names, in that order), the
    Create/Retouch tabs, the size controls (Create only) and the Retouch photo."""

    form: list[Component]
    tabs: gr.Tabs
    size_controls: gr.Column
    photo: Component


def build_history(panel: HistoryPanel, presets: list[str], targets: FormTargets, max_images: int) -> None:
    """The History section, at the place it is called in a ``gr.Blocks``; a row for each of at most ``max_images``
    images of the opened job."""
    form = targets.form
    listing, chosen = gr.State(NOTHING), gr.State(None)
    with gr.Accordion("History", open=False, elem_id="history") as section:
        with gr.Row(elem_id="history-filters"):
            text = gr.Textbox(label="Prompt contains", elem_id="history-text", scale=3)
            preset = gr.Dropdown(presets, value=None, label="Preset", elem_id="history-preset", scale=2)
            since = gr.Textbox(label="From", placeholder="YYYY-MM-DD", elem_id="history-since", scale=1)
            until = gr.Textbox(label="To", placeholder="YYYY-MM-DD", elem_id="history-until", scale=1)
            search = gr.Button("Search", elem_id="history-search", scale=1)
        note = gr.Markdown("", visible=False, elem_id="history-note")
        cards = gr.Dataset(components=[gr.HTML(visible=False)], samples=[], type="index", label="Your jobs",
                           samples_per_page=MAX_SHOWN, elem_id="history-cards", layout="gallery")
        more = gr.Button("More", visible=False, size="sm", elem_id="history-more")
        with gr.Group(visible=False, elem_id="history-opened") as opened:
            details = gr.Markdown("", elem_id="history-details")
            rows, captions, agains, retouch_agains, retouches = [], [], [], [], []
            button = dict(size="sm", scale=0, min_width=190)
            for number in range(1, max_images + 1):
                with gr.Row(visible=False, equal_height=True, elem_classes=["history-image-row"]) as row:
                    captions.append(gr.HTML("", elem_id=f"history-image-{number}"))
                    agains.append(gr.Button("Make this image again", elem_id=f"history-again-{number}", **button))
                    retouch_agains.append(gr.Button("Make this image again", visible=False,
                                                    elem_id=f"history-again-retouch-{number}", **button))
                    retouches.append(gr.Button("Retouch this", elem_id=f"history-retouch-{number}", **button))
                rows.append(row)
            shown = gr.JSON(label="Settings", elem_id="history-settings")
            with gr.Row():
                use = gr.Button("Use these settings", variant="primary", elem_id="history-use")
                delete = gr.Button("Delete…", variant="stop", elem_id="history-delete")
            with gr.Row(visible=False) as confirm:
                gr.Markdown("Delete this job and its images for good?")
                really = gr.Button("Yes, delete", variant="stop", elem_id="history-confirm")
                keep = gr.Button("Keep it", elem_id="history-keep")

    private = dict(api_visibility="private")
    shown_outputs = [cards, listing, more, note]
    gr.on([section.expand, search.click, text.submit], panel.search, [text, preset, since, until], shown_outputs,
          **private)
    more.click(panel.more, [listing], shown_outputs, **private)
    image_rows = [part for parts in zip(rows, captions, agains, retouch_agains, strict=True) for part in parts]
    cards.click(panel.open, [cards, listing], [details, shown, chosen, opened, confirm], **private).then(
        lambda job: panel.images.shown(job, max_images), [chosen], image_rows, queue=False, **private)
    prompt, negative = (form[panel.form.index(name)] for name in ("prompt", "negative_prompt"))
    filled = [*form, targets.tabs, targets.size_controls, targets.photo]
    for index, (again, retouch_again, retouch) in enumerate(zip(agains, retouch_agains, retouches, strict=True)):
        for button_of_row, press in ((again, PRESS_GENERATE), (retouch_again, PRESS_RETOUCH)):
            button_of_row.click(panel.images.again(index), [chosen], filled, queue=False, **private).success(
                None, js=press, **private)
        retouch.click(panel.images.retouch(index), [chosen],
                      [targets.photo, prompt, negative, targets.tabs, targets.size_controls], **private).success(
            None, js=SHOW_PHOTO, **private)
    use.click(panel.use, [chosen], filled, **private)
    delete.click(lambda: gr.Row(visible=True), None, [confirm], queue=False, **private)
    keep.click(lambda: gr.Row(visible=False), None, [confirm], queue=False, **private)
    really.click(panel.delete, [chosen, listing], [*shown_outputs, opened], **private)
