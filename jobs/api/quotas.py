"""Quotas on ``POST /v1/jobs``: an account past its daily images or at its most jobs at once is answered 429.

The answer carries ``Retry-After`` (seconds until 00:00 UTC for the daily quota, ``BUSY_RETRY_S`` for the
concurrency limit) and the IETF draft's ``RateLimit-Policy`` / ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-
headers: ``"daily";q=200;w=86400`` and ``"daily";r=0;t=N``). Usage is read from the shared store
(``jobs.store.quotas``), so every jobs service counts the same.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from anyio.to_thread import run_sync
from sqlalchemy import Engine

from jobs.metrics import JobsMetrics
from jobs.store.quotas import Usage, quota_usage, start_of_day
from jobs.store.records import utc_now
from webui.worker.job_parsing import ApiError

logger = logging.getLogger(__name__)

BUSY_RETRY_S = 5
"""What a client at its concurrency limit is told to wait before trying again (a job usually takes seconds)."""
DAY_S = 86_400


def policies(usage: Usage) -> str:
    """``RateLimit-Policy``: the account's limits as the draft names them."""
    named = []
    if usage.daily_images is not None:
        named.append(f'"daily";q={usage.daily_images};w={DAY_S}')
    if usage.max_running is not None:
        named.append(f'"concurrency";q={usage.max_running}')
    return ", ".join(named)


def refusal(usage: Usage, images: int, now: datetime) -> tuple[str, ApiError] | None:
    """Why (``daily`` or ``concurrency``) and the 429 for a job of ``images`` images given ``usage``; None when it
    fits."""
    if usage.daily_images is not None and usage.images_today + images > usage.daily_images:
        reset = start_of_day(now) + timedelta(days=1)
        wait = max(1, int((reset - now).total_seconds()) + 1)
        left = max(0, usage.daily_images - usage.images_today)
        detail = (f"Daily quota of {usage.daily_images} images reached; resets at 00:00 UTC." if not left else
                  f"This job asks for {images} images but only {left} of the daily quota of {usage.daily_images} "
                  "are left; resets at 00:00 UTC.")
        name, remaining = "daily", left
    elif usage.max_running is not None and usage.active >= usage.max_running:
        wait, name, remaining = BUSY_RETRY_S, "concurrency", 0
        detail = (f"This account already has {usage.active} jobs queued or running, its limit; submit again "
                  "when one has finished.")
    else:
        return None
    return name, ApiError(429, "quota_exceeded", detail, headers={
        "Retry-After": str(wait), "RateLimit-Policy": policies(usage), "RateLimit": f'"{name}";r={remaining};t={wait}'})


async def check_quota(engine: Engine, owner: str, job: dict, idempotency_key: str | None,
                      metrics: JobsMetrics | None = None) -> None:
    """Raise the 429 when ``owner`` (an account with limits, or a member's login) may not submit ``job`` now
    (counted in ``metrics``); a resend of an earlier job (its ``idempotency_key``) always passes."""
    now = utc_now()
    for usage in await run_sync(quota_usage, engine, owner, now, idempotency_key):
        if (refused := refusal(usage, int(job.get("num_images", 1)), now)) is not None:
            reason, error = refused
            logger.info("job refused for %s (account %s): %s", owner or "anonymous", usage.account, error.body.detail)
            if metrics is not None:
                metrics.accounts.refused(owner, reason)
            raise error
