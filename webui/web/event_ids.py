"""A Gradio event's ids: its handler runs in Gradio's queue, outside the HTTP request that started it (the
``queue/join`` or ``call`` request HAProxy gave an id), so ``event_ids`` binds that request's ids while it runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gradio.context import LocalContext

from webui import trace


@contextmanager
def event_ids() -> Iterator[None]:
    """The ids of the request that started the running Gradio event (a new request id without one), bound."""
    request = LocalContext.request.get(None)  # what Gradio hands a handler's ``gr.Request`` parameter
    headers = getattr(request, "headers", None) or {}
    with trace.bound(*trace.headers_ids(headers)):
        yield
