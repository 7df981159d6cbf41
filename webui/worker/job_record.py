"""A worker's REST generations as jobs of the jobs service (``--jobs-url``; ``webui.job_records``'s shapes).

The balancer marks each public ``/generate`` and ``/generate/stream`` it sends straight to a worker
(``RECORD_JOB_HEADER``). For those, ``JobRecorder.start`` records the job while the generation already runs
(``Recording``): the answer waits only for that record, whose id it carries in ``X-Job-Id``; the hold is renewed
every ``renew_s`` with the latest step (so the job's progress shows in ``/v1/jobs``, and a cancel asked there
stops the generation at its next step); the outcome is sent after the answer, off the client's wait. A jobs service
that does not answer is asked again (the record for ``RECORD_FOR_S``, the outcome for ``OUTCOME_FOR_S``); past that
it costs the client nothing but the id: the generation is answered without one (logged).

The seed of a marked job without one is drawn from the balancer's request id, which the balancer keeps when it
replays the request on another worker after the first died: the replay draws the same image, and the jobs
service hands it the same job (its next attempt).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from webui.contract import PHOTO_FIELD, RETRYABLE_STATUSES, WORKER_JOBS_PREFIX
from webui.job_records import MAX_RECORDED_PHOTO, JobEnd, JobRecording, LeaseAnswer, LeaseReport, RecordedJob
from webui.queue_client import queue_http
from webui.schema import GenerationRequest
from webui.settings import WorkerSettings
from webui.trace import JOB_ID_HEADER
from webui.worker.job_parsing import ApiError

logger = logging.getLogger(__name__)

RECORD_FOR_S = 10.0
"""How long a job's record is tried again while the jobs service does not answer (it restarts in a second or two):
the answer waits for it, then goes without an id."""
OUTCOME_FOR_S = 60.0
"""How long a job's outcome is tried again (its hold renewed meanwhile, once the service answers again)."""
RETRY_PAUSE_S = 0.25


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
        fields = {**job.model_dump(exclude_none=True, exclude={PHOTO_FIELD}), "seed": seed}
        if job.init_image is not None and len(job.init_image) <= MAX_RECORDED_PHOTO:  # kept for "make it again"
            fields[PHOTO_FIELD] = job.init_image
        recording = Recording(self, abandon)
        recording.recorded = self.spawn(self._record(JobRecording(request_id=request_id, worker=self.worker,
                                                                  input=fields)))
        recording.keeper = self.spawn(recording.keep())
        return recording

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` in the background, referenced until it ends."""
        task = asyncio.ensure_future(work)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return task

    async def _record(self, recording: JobRecording) -> RecordedJob | None:
        answer = await self.post("", RECORD_FOR_S, content=recording.model_dump_json())
        if answer is None:
            logger.warning("request %s: the jobs service did not record its job; answered without one",
                           recording.request_id)
            return None
        try:
            return RecordedJob.model_validate_json(answer.content)
        except ValidationError as exc:
            logger.warning("request %s: the jobs service's record is not understood (%s)", recording.request_id, exc)
            return None

    async def post(self, path: str, retry_for: float = 0.0, **kwargs: Any) -> httpx.Response | None:
        """One report to the jobs service (``WORKER_JOBS_PREFIX/path``, JSON), tried again for ``retry_for``
        seconds while the service does not answer or answers 5xx; None (logged) when it failed."""
        deadline = time.monotonic() + retry_for
        url = f"{WORKER_JOBS_PREFIX}/{path}".rstrip("/")
        while True:
            try:
                answer = await self._http.post(url, headers={"Content-Type": "application/json"}, **kwargs)
                if answer.status_code < 500:
                    answer.raise_for_status()
                    return answer
                cause = f"HTTP {answer.status_code}"
            except httpx.HTTPStatusError as exc:
                logger.warning("the jobs service refused %s: %s", url, exc)
                return None
            except httpx.TransportError as exc:
                cause = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                logger.warning("the jobs service did not take %s: %s", url, cause)
                return None
            await asyncio.sleep(RETRY_PAUSE_S)

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
        self.ended = False
        """Its outcome is known (and being sent): a second one is ignored."""

    def progress(self, step: int, total: int) -> None:
        self.step = (step, total)

    async def headers(self) -> dict[str, str]:
        """``X-Job-Id`` once the job is recorded (tried for ``RECORD_FOR_S`` at most), else nothing."""
        job = await asyncio.shield(self.recorded)
        return {JOB_ID_HEADER: job.id} if job is not None else {}

    async def keep(self) -> None:
        """Renew the hold every ``renew_s`` with the latest step, until the job's outcome is sent, the hold is lost
        or the job is canceled (then its generation is stopped)."""
        job = await self.recorded
        while job is not None:
            await asyncio.sleep(self.recorder.renew_s)
            step, steps = self.step or (None, None)
            report = LeaseReport(holder=job.holder, worker=self.recorder.worker, step=step, steps=steps)
            answer = await self.recorder.post(f"{job.id}/lease", content=report.model_dump_json())
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
        async def send(job: RecordedJob) -> None:
            content = body if isinstance(body, bytes) else await asyncio.to_thread(body)
            await self.recorder.post(f"{job.id}/result", OUTCOME_FOR_S, content=content)

        self._end(send)

    def failed(self, status: int, words: str) -> None:
        """Send the failure, unless ``status`` says nothing ran (the balancer replays the request: its next
        worker holds the job)."""
        if status not in RETRYABLE_STATUSES:
            self._end(lambda job: self._send_end(job, JobEnd(status="failed", error=words)))

    def left(self) -> None:
        """The client left (or a cancel stopped the generation): the job ends ``canceled``."""
        self._end(lambda job: self._send_end(job, JobEnd(status="canceled")))

    async def _send_end(self, job: RecordedJob, end: JobEnd) -> None:
        await self.recorder.post(f"{job.id}/end", OUTCOME_FOR_S, content=end.model_dump_json())

    def _end(self, send: Callable[[RecordedJob], Coroutine[Any, Any, Any]]) -> None:
        """Send the outcome in the background; the hold is renewed until it is sent (a jobs service restarting
        meanwhile would otherwise see the hold run out and end the job ``canceled``)."""
        if self.ended:
            return
        self.ended = True

        async def ending() -> None:
            try:
                job = await self.recorded
                if job is not None:
                    await send(job)
            finally:
                self.keeper.cancel()

        self.recorder.spawn(ending())


class RecordedAnswer(Response):
    """A result's answer whose job then gets the same result: sent once the answer is out, in a task of its own (a
    ``BackgroundTask`` would hold the connection's next request until the upload ended)."""

    def __init__(self, body: bytes, recording: Recording, headers: dict[str, str]) -> None:
        super().__init__(body, media_type="application/json", headers=headers)
        self.recording = recording

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
        self.recording.succeeded(self.body)
