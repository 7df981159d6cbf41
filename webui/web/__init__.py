"""The web front process (``python -m webui.web``): the studio page and the ``gradio_client`` API.

``app`` (the FastAPI app with Gradio mounted, health routes, process), ``studio`` (the page:
config, layout, handlers, photos), ``worker_client`` (jobs to the worker queue, with retries),
``request_guard`` (bounded request bodies, JSON errors), ``presence`` (a job whose client left
is cancelled), ``cache_janitor`` (Gradio's cache kept bounded), ``photo_input``.
"""
