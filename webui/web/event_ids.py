"""A Gradio event's ids: its handler runs in Gradio's queue, outside the HTTP request that started it (the
``queue/join`` or ``call`` request HAProxy gave an id), so ``event_ids`` binds that request's ids while it runs;
``event_job_key`` names the event's job (an API call's) for whoever must find it later
(``webui.web.studio.adoption``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gradio.context import LocalContext

from webui import trace
from webui.contract import ADOPTED_EVENT_HEADER, CLIENT_ID, EVENT_JOB_KEY_PREFIX

PAGE_JOB_KEY_PREFIX = "gradio-page:"
"""How the ``Idempotency-Key`` of a page's job begins: never adopted as an API call's (the page's events answer in
their own shape), only joined again whole by the stream relay."""


@contextmanager
def event_ids() -> Iterator[None]:
    """The ids of the request that started the running Gradio event (a new request id without one), bound."""
    request = LocalContext.request.get(None)  # what Gradio hands a handler's ``gr.Request`` parameter
    headers = getattr(request, "headers", None) or {}
    with trace.bound(*trace.headers_ids(headers)):
        yield


def adopted_event() -> str | None:
    """For a call the stream relay joined again here after its web front died, the call's first event id (its
    ``ADOPTED_EVENT_HEADER``); None for any other event."""
    request = LocalContext.request.get(None)
    headers = dict((getattr(request, "headers", None) or {}).items())
    first = next((value for name, value in headers.items() if name.lower() == ADOPTED_EVENT_HEADER.lower()), "")
    return first if CLIENT_ID.fullmatch(first) else None


def event_job_key(event_id: str | None = None, prefix: str = EVENT_JOB_KEY_PREFIX) -> str | None:
    """The ``Idempotency-Key`` of a Gradio event's job (default: the running event's, or its ``adopted_event``);
    None outside an event. ``prefix``: an API call's (which a web front may adopt), or ``PAGE_JOB_KEY_PREFIX``."""
    event_id = event_id or adopted_event() or LocalContext.event_id.get(None)
    return f"{prefix}{event_id}" if event_id else None
