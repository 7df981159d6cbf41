"""A worker's REST generations as jobs of the jobs service (``--jobs-url``; ``webui.job_records``'s shapes).

The balancer marks each public ``/generate`` and ``/generate/stream`` it sends straight to a worker
(``RECORD_JOB_HEADER``). For those, ``JobRecorder.start`` records the job while the generation already runs
(``Recording``): the answer waits only for that record, whose id it carries in ``X-Job-Id``; the hold is renewed
every ``renew_s`` with the latest step (so the job's progress shows in ``/v1/jobs``, and a cancel asked there
stops the generation at its next step); the outcome is sent after the answer, off the client's wait. A jobs service
that does not answer in time costs the client nothing but the id: the generation is answered without one (logged).

The seed of a marked job without one is drawn from the balancer's request id, which the balancer keeps when it
replays the request on another worker after the first died: the replay draws the same image, and the jobs
service hands it the same job (its next attempt).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from webui.contract import RETRYABLE_STATUSES, WORKER_JOBS_PREFIX
from webui.job_records import JobEnd, JobRecording, LeaseAnswer, LeaseReport, RecordedJob
from webui.queue_client import queue_http
from webui.schema import GenerationRequest
from webui.settings import WorkerSettings
from webui.trace import JOB_ID_HEADER
from webui.worker.job_parsing import ApiError

logger = logging.getLogger(__name__)

ANSWER_WAIT_S = 1.0
"""The longest an answer waits for its job's record once the generation is done; then it goes without an id."""


def canceled_error(headers: dict[str, str]) -> ApiError:
    """The answer to a generation stopped by a cancel asked at the jobs service (as the jobs service's own)."""
    job_id = headers.get(JOB_ID_HEADER, "")
    return ApiError(409, "canceled", f"Job {job_id} was canceled (POST /v1/jobs/{job_id}/cancel) before it "
                    "finished.", headers=headers)


class JobRecorder:
    """Records marked generations at the jobs service ``url`` (the balancer's worker queue)."""

    def __init__(self, url: str, worker: str, settings: WorkerSettings | None = None, renew_s: float = 1.0,
                 timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.worker = worker
        self.renew_s = renew_s
        ca, cert = (settings.worker_queue_ca, settings.worker_queue_cert) if settings else (None, None)
        self._http = queue_http(url.rstrip("/"), timeout, min(timeout, 2.0), ca, cert, transport)
        self._sending: set[asyncio.Task[Any]] = set()

    def start(self, request_id: str, job: GenerationRequest, seed: int, abandon: Callable[[], object]) -> Recording:
        """Record ``job`` (drawing ``seed``) for the balancer's request ``request_id``; ``abandon`` stops its
        generation (a cancel asked at the jobs service)."""
        fields = {**job.model_dump(exclude_none=True, exclude={"init_image"}), "seed": seed}
        recording = Recording(self, abandon)
        recording.recorded = self.spawn(self._record(JobRecording(request_id=request_id, worker=self.worker,
                                                                  input=fields)))
        recording.keeper = self.spawn(recording.keep())
        return recording

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` in the background, referenced until it ends (an answer never waits for it)."""
        task = asyncio.ensure_future(work)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return task

    async def _record(self, recording: JobRecording) -> RecordedJob | None:
        try:
            answer = await self._http.post(WORKER_JOBS_PREFIX, content=recording.model_dump_json(),
                                           headers={"Content-Type": "application/json"})
            answer.raise_for_status()
            return RecordedJob.model_validate_json(answer.content)
        except (httpx.HTTPError, ValidationError) as exc:
            logger.warning("request %s: the jobs service did not record its job (%s); answered without one",
                           recording.request_id, exc)
            return None

    async def post(self, path: str, **kwargs: Any) -> httpx.Response | None:
        """One report to the jobs service; None (logged) when it failed."""
        try:
            answer = await self._http.post(f"{WORKER_JOBS_PREFIX}/{path}", **kwargs)
            answer.raise_for_status()
            return answer
        except httpx.HTTPError as exc:
            logger.warning("the jobs service did not take %s: %s", path, exc)
            return None

    async def aclose(self) -> None:
        if self._sending:
            await asyncio.wait(self._sending, timeout=5.0)
        await self._http.aclose()


class Recording:
    """One marked generation's job: recorded, held while it runs, then ended."""

    def __init__(self, recorder: JobRecorder, abandon: Callable[[], object]) -> None:
        self.recorder = recorder
        self.abandon = abandon
        self.recorded: asyncio.Task[RecordedJob | None]
        self.keeper: asyncio.Task[None]
        self.step: tuple[int, int] | None = None
        """The latest denoising step (set from the generation thread; a tuple is swapped whole)."""
        self.canceled = False
        """A cancel was asked at the jobs service, and the generation stopped for it."""

    def progress(self, step: int, total: int) -> None:
        self.step = (step, total)

    async def headers(self) -> dict[str, str]:
        """``X-Job-Id`` once the job is recorded (waiting at most ``ANSWER_WAIT_S``), else nothing."""
        done, _ = await asyncio.wait({self.recorded}, timeout=ANSWER_WAIT_S)
        job = self.recorded.result() if done else None
        return {JOB_ID_HEADER: job.id} if job is not None else {}

    async def keep(self) -> None:
        """Renew the hold every ``renew_s`` with the latest step, until the job ends, is lost or is canceled."""
        job = await self.recorded
        while job is not None:
            await asyncio.sleep(self.recorder.renew_s)
            step, steps = self.step or (None, None)
            report = LeaseReport(holder=job.holder, step=step, steps=steps)
            answer = await self.recorder.post(f"{job.id}/lease", content=report.model_dump_json(),
                                              headers={"Content-Type": "application/json"})
            if answer is None:
                continue
            lease = LeaseAnswer.model_validate_json(answer.content).lease
            if lease == "cancel_requested":
                logger.info("job %s: canceled at the jobs service; stopping its generation", job.id)
                self.canceled = True
                self.abandon()
            if lease != "held":
                return

    def succeeded(self, body: bytes | Callable[[], bytes]) -> None:
        """Send the result (the worker's ``GenerationResult`` JSON, or how to render it) in the background."""
        self._end(lambda job: self._send_result(job, body))

    def failed(self, status: int, words: str) -> None:
        """Send the failure, unless ``status`` says nothing ran (the balancer replays the request: its next
        worker holds the job)."""
        if status not in RETRYABLE_STATUSES:
            self._end(lambda job: self.recorder.post(f"{job.id}/end", content=JobEnd(
                status="failed", error=words).model_dump_json(), headers={"Content-Type": "application/json"}))

    def left(self) -> None:
        """The client left (or a cancel stopped the generation): the job ends ``canceled``."""
        self._end(lambda job: self.recorder.post(f"{job.id}/end", content=JobEnd(status="canceled").model_dump_json(),
                                                 headers={"Content-Type": "application/json"}))

    def _end(self, send: Callable[[RecordedJob], Coroutine[Any, Any, Any]]) -> None:
        self.keeper.cancel()

        async def ending() -> None:
            job = await self.recorded
            if job is not None:
                await send(job)

        self.recorder.spawn(ending())

    async def _send_result(self, job: RecordedJob, body: bytes | Callable[[], bytes]) -> None:
        content = body if isinstance(body, bytes) else await asyncio.to_thread(body)
        await self.recorder.post(f"{job.id}/result", content=content, headers={"Content-Type": "application/json"})


class RecordedAnswer(Response):
    """A result's answer whose job then gets the same result: sent once the answer is out, in a task of its own (a
    ``BackgroundTask`` would hold the connection's next request until the upload ended)."""

    def __init__(self, body: bytes, recording: Recording, headers: dict[str, str]) -> None:
        super().__init__(body, media_type="application/json", headers=headers)
        self.recording = recording

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
        self.recording.succeeded(self.body)
