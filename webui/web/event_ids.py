"""A Gradio event's ids: its handler runs in Gradio's queue, outside the HTTP request that started it (the
``queue/join`` or ``call`` request HAProxy gave an id), so ``event_ids`` binds that request's ids while it runs;
``event_job_key`` names the event's job (an API call's) for whoever must find it later
(``webui.web.studio.adoption``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gradio.context import LocalContext

from webui import trace
from webui.contract import EVENT_JOB_KEY_PREFIX


@contextmanager
def event_ids() -> Iterator[None]:
    """The ids of the request that started the running Gradio event (a new request id without one), bound."""
    request = LocalContext.request.get(None)  # what Gradio hands a handler's ``gr.Request`` parameter
    headers = getattr(request, "headers", None) or {}
    with trace.bound(*trace.headers_ids(headers)):
        yield


def event_job_key(event_id: str | None = None) -> str | None:
    """The ``Idempotency-Key`` of a Gradio event's job (default: the running event's); None outside an event."""
    event_id = event_id if event_id is not None else LocalContext.event_id.get(None)
    return f"{EVENT_JOB_KEY_PREFIX}{event_id}" if event_id else None
