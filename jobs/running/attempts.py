"""One job on the workers' queue until it succeeds, is refused, or its own deadline passes.

Each attempt is the web front's ``WorkerClient`` (one NDJSON stream, its error classification, the same seed on
every attempt). A transient failure (503 busy or not ready, a refused or cut connection, a stream that ended
early) is tried again after a short back-off for as long as the job's deadline allows: when every worker is down
at once, the job waits for the next ready one instead of failing. A refusal (4xx, out of memory) is final.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from webui.web.worker_client import JobOutcome, ProgressCallback, WorkerClient
from webui.web.worker_errors import WorkersUnavailable

logger = logging.getLogger(__name__)

FIRST_DELAY_S = 0.25
MAX_DELAY_S = 2.0
"""Back-off between attempts: 0.25 s, doubling to 2 s (a restarted worker is taken within 2 s of being ready)."""


class DeadlinePassed(Exception):
    """No worker finished the job before its deadline; ``str()`` says why, for the client (in the words of the
    web front's ``WorkersUnavailable``)."""


Deadline = float | Callable[[], float]
"""A ``time.monotonic()`` value, or a function that gives it (read before each retry: it may move)."""


async def run_until_deadline(client: WorkerClient, fields: Mapping[str, Any], deadline: Deadline,
                             on_progress: ProgressCallback | None = None,
                             headers: Mapping[str, str] | None = None) -> JobOutcome:
    """Run the job (``GenerationRequest`` fields, seed included) until it succeeds; ``deadline`` is a
    ``time.monotonic()`` value (or gives one). Returns the result with every worker attempt counted. Raises
    ``JobRejected`` (final) or ``DeadlinePassed``."""
    delay, rounds, attempts, started = FIRST_DELAY_S, 0, 0, time.monotonic()
    while True:
        rounds += 1
        try:
            outcome = await client.generate(fields, on_progress=on_progress, headers=headers)
        except WorkersUnavailable as error:
            cause, attempts = error.cause, attempts + error.attempts
        else:
            return JobOutcome(outcome.result, attempts + outcome.attempts, (time.monotonic() - started) * 1000)
        left = (deadline() if callable(deadline) else deadline) - time.monotonic()
        if left <= delay:
            raise DeadlinePassed(str(WorkersUnavailable(attempts, cause)))
        if rounds == 1 or rounds % 10 == 0:
            logger.warning("no worker took the job (attempt %d: %s); trying again until its deadline (%.0f s left)",
                           attempts, cause, left)
        await anyio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)
