"""The History section of the studio page: filters, the job cards with "More", and the opened job (settings,
"Use these settings", download links, a Delete that asks once more). Its events are ``HistoryPanel``'s."""

from __future__ import annotations

import gradio as gr
from gradio.components import Component

from webui.web.studio.history import MAX_SHOWN, NOTHING, HistoryPanel


def build_history(panel: HistoryPanel, presets: list[str], form: list[Component]) -> None:
    """The History section, at the place it is called in a ``gr.Blocks``; ``form``: the components
    ``panel.form`` names, in that order."""
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
    cards.click(panel.open, [cards, listing], [details, shown, chosen, opened, confirm], **private)
    use.click(panel.use, [chosen], form, **private)
    delete.click(lambda: gr.Row(visible=True), None, [confirm], queue=False, **private)
    keep.click(lambda: gr.Row(visible=False), None, [confirm], queue=False, **private)
    really.click(panel.delete, [chosen, listing], [*shown_outputs, opened], **private)
