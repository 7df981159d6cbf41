"""The retention janitor: every ``every_s`` seconds, expired jobs are deleted with their results and events
(``jobs.store.sweep_expired``; safe on several hosts at once), leaving tombstones for the API's ``410 Gone``, and
input photos past their account's retention are removed (``jobs.store.strip_expired_inputs``)."""

from __future__ import annotations

import logging

import anyio
from anyio.to_thread import run_sync
from sqlalchemy import Engine

from jobs.store import strip_expired_inputs, sweep_expired

logger = logging.getLogger(__name__)


async def run_janitor(engine: Engine, every_s: float = 60.0) -> None:
    """Sweep now, then every ``every_s`` seconds, until cancelled; a failed sweep is logged and retried."""
    while True:
        try:
            await run_sync(sweep_expired, engine)
            await run_sync(strip_expired_inputs, engine)
        except Exception:
            logger.exception("janitor: the sweep failed; trying again in %g s", every_s)
        await anyio.sleep(every_s)
