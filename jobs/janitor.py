"""The retention janitor: every ``every_s`` seconds, expired jobs are deleted with their results and events
(``jobs.store.sweep_expired``; safe on several hosts at once), leaving tombstones for the API's ``410 Gone``."""

from __future__ import annotations

import logging

import anyio
from anyio.to_thread import run_sync
from sqlalchemy import Engine

from jobs.store import sweep_expired

logger = logging.getLogger(__name__)


async def run_janitor(engine: Engine, every_s: float = 60.0) -> None:
    """Sweep now, then every ``every_s`` seconds, until cancelled; a failed sweep is logged and retried."""
    while True:
        try:
            await run_sync(sweep_expired, engine)
        except Exception:
            logger.exception("janitor: the sweep failed; trying again in %g s", every_s)
        await anyio.sleep(every_s)
