"""The web front process (``python -m webui.web``): the studio page and the ``gradio_client`` API.

``app`` (the FastAPI app with Gradio mounted, health routes, process), ``studio`` (the page:
config, layout, handlers, photos), ``worker_client`` (jobs to the worker queue, with retries),
``request_guard`` (bounded request bodies, checked ids and calls, JSON errors) with
``request_body``, ``gradio_routes`` and ``bounded``, ``presence`` (a job whose client left is
cancelled), ``upload_progress`` (Gradio's upload tracker, bounded), ``cache_janitor`` (Gradio's
cache kept bounded), ``photo_input``.
"""

from webui.web import gradio_stubs

gradio_stubs.install()  # before anything in this package imports Gradio: see gradio_stubs
