"""The studio page's layout: ``build_studio`` wires the components to a ``Studio``'s handlers.

The client API's inputs are hidden components (``api-inputs``): their labels are the API's
parameter names, so ``/generate`` and ``/retouch`` keep a stable signature for API clients.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.contract import MAX_SIDE
from webui.schema import MAX_SEED, Limits
from webui.web.photo_input import PhotoInput
from webui.web.studio.adoption import Adoption
from webui.web.studio.config import CUSTOM, ExamplePrompt, StudioConfig
from webui.web.studio.form_events import FormEvents, size_pick_js
from webui.web.studio.handlers import Studio
from webui.web.studio.history import HistoryPanel
from webui.web.studio.history_layout import FormTargets, build_history
from webui.web.studio.info import info_details
from webui.web.studio.job_page import JobPage, browser_state
from webui.web.studio.recipe_drop import RecipeDrop
from webui.web.studio.sizes import MIN_SIDE, retouch_note

JOB_CONCURRENCY_ID = "worker-jobs"
"""Every job event shares one concurrency limit: the web front's share of the workers."""
CACHE_CLEANUP = (1800, 6 * 3600)
"""Every 30 minutes, delete result images older than 6 hours (Gradio's ``delete_cache``)."""


def reuse_seed_values(info: dict[str, Any] | None) -> tuple[Any, Any]:
    if not info or "seed" not in info:
        gr.Warning("Generate an image first: there is no last seed yet.", title="Seed")
        return gr.skip(), gr.skip()
    return info["seed"], False


def result_shown(info: dict[str, Any] | None) -> tuple[str, Any]:
    """(details view, Share button) after a job event: the button only while a job's result is shown."""
    return info_details(info), gr.Button(visible=bool((info or {}).get("job_id")))


SIGN_OUT_JS = ("() => fetch('sign-out', {method: 'POST', credentials: 'same-origin'})"
               ".then(() => window.location.assign('sign-in'))")
"""The Sign out button: the web front deletes the session cookie, then the sign-in page."""


def build_studio(studio: Studio, config: StudioConfig, examples: list[ExamplePrompt], max_images: int,
                 concurrency_limit: int | None, job_page: JobPage | None = None,
                 history: HistoryPanel | None = None, sign_out: bool = False,
                 adoption: Adoption | None = None) -> gr.Blocks:
    """The studio page (``gr.Blocks``) wired to ``studio`` (and its jobs, with ``job_page``: a Cancel button, the
    kept job followed again on load; with ``sign_out``, a Sign out button; with ``adoption``, the hidden endpoint
    that adopts API calls whose web front died); call ``.queue()`` before mounting."""
    defaults = config.defaults
    width0, height0 = config.resolutions[defaults.resolution]
    job_options = dict(concurrency_limit=concurrency_limit, concurrency_id=JOB_CONCURRENCY_ID)
    form_events = FormEvents(config, studio.worker_info)
    multiple = Limits().family.size_multiple

    with gr.Blocks(title="Portrait Studio", fill_width=True, delete_cache=CACHE_CLEANUP) as demo:
        with gr.Row(elem_id="header"):
            gr.Markdown("# Portrait Studio\nAI portraits for photographers, served by a pool of GPU workers.",
                        elem_id="title")
            model_info = gr.Markdown("Checking the workers…", elem_id="model-note")
            if sign_out:  # the account page (its admins' members and keys; a member is told they are not one),
                # and Sign out: a POST from this page (a link would let any site sign its users out)
                gr.Button("Account", link="account", size="sm", scale=0, min_width=100, elem_id="account-link")
                gr.Button("Sign out", size="sm", scale=0, min_width=100, elem_id="sign-out").click(
                    None, js=SIGN_OUT_JS)

        with gr.Row(equal_height=False, elem_id="studio-row"):
            with gr.Column(scale=5, elem_id="controls"):
                with gr.Group(elem_id="studio-presets"):
                    with gr.Row():
                        preset = gr.Dropdown([p.name for p in config.presets], value=None, label="Studio preset",
                                             elem_id="preset", scale=2)
                        subject = gr.Textbox(label="Subject", placeholder="who is in the photo",
                                             elem_id="subject", scale=3)
                    with gr.Row(elem_id="preset-note-row"):
                        preset_description = gr.Markdown("", elem_id="preset-description")
                        undo_preset = gr.Button("Undo preset", size="sm", visible=False, elem_id="undo-preset",
                                                scale=0, min_width=120)
                preset_memo, preset_undo = gr.State(None), gr.State({})
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt", autofocus=True,
                                    placeholder="Describe the portrait: subject, light, background, lens…")
                negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="negative-prompt",
                                      placeholder="What to avoid (ignored by models without guidance)")
                with gr.Tabs(elem_id="mode-tabs") as mode_tabs:
                    with gr.Tab("Create", id="create", elem_id="create-tab") as create_tab:
                        generate_button = gr.Button("Generate", variant="primary", size="lg", elem_id="generate")
                    with gr.Tab("Retouch", id="retouch", elem_id="retouch-tab") as retouch_tab:
                        gr.Markdown("The result keeps the photo's framing; the prompt says what to change.",
                                    elem_classes=["hint"])
                        retouch_size_note = gr.Markdown(retouch_note(None, multiple, MAX_SIDE),
                                                        elem_id="retouch-size", elem_classes=["hint"])
                        photo = PhotoInput(type="filepath", label="Photo to retouch", sources=["upload", "clipboard"],
                                           elem_id="retouch-image", height=260)
                        strength = gr.Slider(0.05, 1.0, value=defaults.strength, step=0.05, label="Strength",
                                             info="How much the photo may change", elem_id="strength")
                        retouch_button = gr.Button("Retouch", variant="primary", size="lg", elem_id="retouch-button")
                cancel_button = gr.Button("Cancel job", variant="stop", size="sm", elem_id="cancel",
                                          visible=job_page is not None)

                with gr.Accordion("Settings", open=True, elem_id="settings"):
                    with gr.Column(elem_id="size-controls") as size_controls:  # Create only: a retouch's is its photo's
                        resolution = gr.Dropdown([*config.resolutions, CUSTOM], value=defaults.resolution,
                                                 label="Resolution", elem_id="resolution")
                        with gr.Row():
                            # Until the workers' model is known: the default family's size multiple.
                            side = dict(minimum=MIN_SIDE, maximum=MAX_SIDE, step=multiple)
                            width = gr.Slider(value=width0, label="Width", elem_id="width", **side)
                            height = gr.Slider(value=height0, label="Height", elem_id="height", **side)
                        size_note = gr.Markdown("", visible=False, elem_id="size-note", elem_classes=["hint"])
                    with gr.Row():
                        steps = gr.Slider(1, 100, value=defaults.steps, step=1, label="Steps", elem_id="steps")
                        guidance = gr.Slider(0.0, 20.0, value=defaults.guidance, step=0.1, label="Guidance",
                                             elem_id="guidance")
                    with gr.Row(elem_id="seed-row"):
                        seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed",
                                         scale=3)
                        randomize = gr.Checkbox(True, label="Random", elem_id="seed-random", scale=1)
                        reuse_seed = gr.Button("Reuse last seed", elem_id="reuse-seed", scale=2)
                    with gr.Row():
                        lora_scale = gr.Slider(0.0, 2.0, value=defaults.lora_scale, step=0.05, label="LoRA scale",
                                               elem_id="lora-scale")
                        num_images = gr.Slider(1, max_images, value=min(defaults.num_images, max_images), step=1,
                                               label="Images", elem_id="num-images")

                recipe_drop = RecipeDrop.build()
                gr.Examples([[e.prompt, e.negative_prompt] for e in examples], inputs=[prompt, negative],
                            label="Example prompts", elem_id="examples", examples_per_page=5)

            with gr.Column(scale=6, elem_id="results"):
                status = gr.Markdown("", elem_id="progress")
                error = gr.Markdown("", visible=False, elem_id="error", elem_classes=["error-area"])
                gallery = gr.Gallery(label="Results", columns=2, height=640, object_fit="contain",
                                     buttons=["download", "download_all", "fullscreen"], elem_id="gallery",
                                     interactive=False)
                summary = gr.Markdown("", elem_id="info-summary")
                share_button = gr.Button("Share link", size="sm", elem_id="share", visible=False)  # see result_shown
                share_links = gr.Markdown("", visible=False, elem_id="share-links")
                with gr.Accordion("Generation details", open=False, elem_id="details"):
                    details = gr.Markdown(info_details(None), elem_id="info-details")
                info = gr.JSON(label="Info", elem_id="info", visible=False)  # the API's info; the page shows details

        # Inputs of the client API (hidden): None = the model's default, seed -1 = random.
        with gr.Column(visible=False, elem_id="api-inputs"):
            api_prompt = gr.Textbox(label="prompt")
            api_negative = gr.Textbox("", label="negative_prompt")
            api_steps = gr.Number(None, precision=0, label="steps")
            api_guidance = gr.Number(None, label="guidance")
            api_width = gr.Number(None, precision=0, label="width")
            api_height = gr.Number(None, precision=0, label="height")
            api_seed = gr.Number(-1, precision=0, label="seed")
            api_lora = gr.Number(1.0, label="lora_scale")
            api_images = gr.Number(1, precision=0, label="num_images")
            api_image = PhotoInput(type="filepath", label="image")
            api_strength = gr.Number(defaults.strength, label="strength")

        ui_outputs = [gallery, info, summary, error, model_info]
        progress_on = dict(show_progress_on=[status, gallery])
        common = [steps, guidance]
        form = [prompt, negative, *common, width, height, seed, randomize, lora_scale, num_images]
        shown = []  # the events that show a result: the details view follows each (wired last: see below)
        if job_page is None:
            shown.append(gr.on([generate_button.click, prompt.submit], studio.ui_generate, form, ui_outputs,
                               api_visibility="private", **progress_on, **job_options))
            retouch_inputs = [photo, strength, *form[:4], seed, randomize, lora_scale, num_images]
            shown.append(retouch_button.click(studio.ui_retouch, retouch_inputs, ui_outputs, api_visibility="private",
                                              **progress_on, **job_options))
        else:  # submit (the job id and the form kept in the browser), then follow the job
            state = browser_state()
            follow = dict(fn=job_page.follow, inputs=[state], outputs=[*ui_outputs, state], api_visibility="private",
                          **progress_on, **job_options)
            private = dict(api_visibility="private", **job_options)
            shown.append(gr.on([generate_button.click, prompt.submit], job_page.submit_generate,
                               [*form, strength, preset], [state, error], **private).then(**follow))
            shown.append(retouch_button.click(job_page.submit_retouch, [photo, strength, *form, preset], [state, error],
                                              **private).then(**follow))
            cancel_button.click(job_page.cancel, [state], None, api_visibility="private", queue=False)
            share_button.click(job_page.share, [info], [share_links], api_visibility="private", queue=False)
            gr.on([generate_button.click, prompt.submit, retouch_button.click], lambda: gr.Markdown(visible=False),
                  None, [share_links], api_visibility="private", queue=False)  # the last result's links go
        gr.on(
            [], studio.api_generate,
            [api_prompt, api_negative, api_steps, api_guidance, api_width, api_height, api_seed, api_lora, api_images],
            [gallery, info], api_name="generate", **job_options,
        )
        gr.on(
            [], studio.api_retouch,
            [api_image, api_prompt, api_strength, api_negative, api_steps, api_guidance, api_seed, api_lora,
             api_images],
            [gallery, info], api_name="retouch", **job_options,
        )

        preset_fields = [prompt, negative, resolution, width, height, steps, guidance, num_images, lora_scale]
        preset.input(form_events.preset_chosen, [preset, subject, *preset_fields, preset_memo],
                     [*preset_fields, preset_description, preset_memo, preset_undo, undo_preset],
                     api_visibility="private", queue=False)
        undo_preset.click(form_events.undo, [preset_undo],
                          [*preset_fields, preset, preset_description, preset_memo, preset_undo, undo_preset],
                          api_visibility="private", queue=False)
        subject.input(form_events.subject_typed, [subject, prompt, preset_memo], [prompt, preset_memo],
                      api_visibility="private", queue=False, trigger_mode="always_last")
        gr.on([width.release, height.release], form_events.size_typed, [width, height],
              [width, height, resolution, size_note], api_visibility="private", queue=False, trigger_mode="always_last")
        # In the browser, no round trip, and first (a trigger's events start in order): a Generate clicked right
        # after a size pick gets that size.
        resolution.input(None, [resolution, width, height], [width, height], js=size_pick_js(config),
                         api_visibility="private", queue=False)
        resolution.input(lambda: gr.Markdown(visible=False), None, [size_note], api_visibility="private", queue=False)
        photo.change(form_events.photo_chosen, [photo], [retouch_size_note], api_visibility="private", queue=False)
        create_tab.select(lambda: form_events.tab_chosen(False), None, [size_controls], api_visibility="private",
                          queue=False)
        retouch_tab.select(lambda: form_events.tab_chosen(True), None, [size_controls], api_visibility="private",
                           queue=False)
        gr.on(
            [width.input, height.input], lambda w, h: config.resolution_name(int(w), int(h)), [width, height],
            [resolution], api_visibility="private", queue=False, trigger_mode="always_last",
        )
        reuse_seed.click(reuse_seed_values, [info], [seed, randomize], api_visibility="private", queue=False)
        loaded = demo.load(studio.page_load, None, [model_info, steps, guidance, width, height, num_images],
                           api_visibility="private")
        if job_page is not None:  # the kept form back, then the kept job followed again
            shown.append(loaded.then(job_page.restore, [state], [*form, strength], api_visibility="private",
                                     queue=False).then(**follow))
        recipe_drop.wire([*form, strength, resolution], studio.max_upload_bytes, config.resolution_name)
        if history is not None:  # the user's jobs (webui/web/studio/history.py), at the page's foot
            targets = FormTargets([*form, strength, preset, resolution], mode_tabs, size_controls, photo)
            build_history(history, [p.name for p in config.presets], targets, max_images)
        for event in shown:  # last, so that every earlier event keeps its fn_index (contract.JOB_EVENT_INDICES)
            event.then(result_shown, [info], [details, share_button], api_visibility="private", queue=False)
        if adoption is not None:
            adoption.wire([gallery, info], **job_options)
    return demo
