"""A client API call whose web front died goes on at this one: the balancer's stream relay hands it over.

A client's Gradio joins and event stream (``/gradio_api/queue/data``) reach its web front through the balancer's
stream relay (``jobs.relay``), which outlives any web front. When the one serving a call dies, the relay asks
another, through HAProxy's webs backend (``POST ADOPT_PATH?session_hash=…&event_id=…``, with the client's own
headers: its cookie picks the web front its next requests get too), to adopt each call the client still waits for.
This web front finds the call's job by its key (``event_job_key`` of the old event: the job service's answer is the
client's own job only), pushes an event of the page's hidden ``adopt`` endpoint that follows that job as the call
did into its own Gradio queue, for the same session, and answers its id. The relay reads this front's stream of the
session and passes its messages on under the old event's id: the same progress, the same result, no second job.
A call with no such job (a page's event, or a call whose web front died before it submitted one) is answered 404:
the relay then joins it again whole, marked with its first event id (``ADOPTED_EVENT_HEADER``).
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from gradio.data_classes import PredictBodyInternal
from starlette.routing import Mount

from webui.contract import ADOPT_PATH, CLIENT_ID, QUEUE_JOIN_PATH
from webui.web.event_ids import event_ids, event_job_key
from webui.web.jobs_client import JobsError
from webui.web.presence import EventStreams
from webui.web.studio.jobs_runner import Gallery, JobRunner, login_of
from webui.web.worker_errors import WorkerError

logger = logging.getLogger(__name__)

ADOPT_API = "adopt"
"""The hidden endpoint that follows an adopted call's job (not in the API page: the relay has it pushed here)."""


def refusal(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, "fields": []}, status_code=status)


class Adoption:
    """The hidden ``adopt`` endpoint (``wire``) and the route that pushes its events (``route``)."""

    def __init__(self, runner: JobRunner, streams: EventStreams, listen_grace: float) -> None:
        self.runner, self.streams, self.listen_grace = runner, streams, listen_grace

    def wire(self, outputs: list[gr.components.Component], **options: Any) -> None:
        """Add the hidden endpoint to the page being built (last: every other event keeps its ``fn_index``), with
        the API calls' ``outputs``: an adopted call answers what the call would have."""
        job_id = gr.Textbox(visible=False)
        gr.on([], self.follow, [job_id], outputs, api_name=ADOPT_API, api_visibility="private", **options)

    async def follow(self, job_id: str, progress: gr.Progress = gr.Progress(),
                     request: gr.Request | None = None) -> tuple[Gallery, dict[str, Any]]:
        """Follow an adopted call's job (the client's own: the jobs service answers for no other), as the call did."""
        login = login_of(request)
        try:
            with event_ids():
                return await self.runner.follow_for_caller(job_id, progress, self.streams, self.listen_grace, login)
        except WorkerError as exc:
            raise gr.Error(str(exc), title="Generation failed", print_exception=False) from None

    def route(self, app: FastAPI, demo: gr.Blocks) -> None:
        """Serve ``ADOPT_PATH`` on ``app`` for ``demo``'s queue (before ``demo`` is mounted on ``app``, at /)."""

        async def adopt(request: Request, session_hash: str, event_id: str) -> JSONResponse:
            """Push an ``adopt`` event for ``event_id``'s call into this front's queue, in ``session_hash``."""
            if not (CLIENT_ID.fullmatch(session_hash) and CLIENT_ID.fullmatch(event_id)):
                return refusal(422, "invalid_id", "session_hash and event_id must be Gradio ids.")
            try:
                job_id = await self.runner.find(event_job_key(event_id), login_of(request))
            except JobsError as exc:
                return refusal(503, "jobs_unavailable", str(exc))
            if job_id is None:  # the relay joins the call again instead
                return refusal(404, "no_job", "No job of this call was recorded as an API call's.")
            queue = demo._queue
            if queue.server_app is None:  # no join came yet: Gradio's own join would set it
                queue.set_server_app(next(route.app for route in app.routes if isinstance(route, Mount)))
            if queue.stopped:
                return refusal(503, "stopping", "This web front is stopping; another one takes the call.")
            index = next(index for index, fn in demo.fns.items() if fn.api_name == ADOPT_API)
            # Gradio roots an event's file URLs at its join's path (route_utils.get_api_call_path): as if joined.
            joined = Request({**request.scope, "path": QUEUE_JOIN_PATH}, request.receive)
            body = PredictBodyInternal(session_hash=session_hash, data=[job_id], fn_index=index, request=joined)
            pushed, new_id, state = await queue.push(body=body, request=joined, username=None)
            if not pushed:
                return refusal(503 if state == "queue_full" else 400, state, str(new_id))
            logger.info("adopting call %s of session %s as %s: following its job %s", event_id, session_hash, new_id,
                        job_id)
            return JSONResponse({"event_id": new_id})

        app.add_api_route(ADOPT_PATH, adopt, methods=["POST"], include_in_schema=False)
