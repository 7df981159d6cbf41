"""Fault injection in a web front, FOR TESTS ONLY (as ``webui.worker.faults`` is for workers); production never
sets these variables.

``PORTRAIT_FAULT_RECORD_DELAY_S=s``
    An API call waits ``s`` seconds before its job is recorded, on its first join only: a call that the stream
    relay joined again here after its web front died (``event_ids.adopted_event``) goes on at once. The test kills
    the call's web front within that window, so that the call's job was never recorded when its front died.
``PORTRAIT_FAULT_PROMPT_MARKER=text``
    Only for prompts that contain ``text`` (otherwise: every API call).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio

from webui.contract import FAULT_PROMPT_MARKER, FAULT_RECORD_DELAY_S
from webui.web.event_ids import adopted_event

logger = logging.getLogger(__name__)


async def before_record(fields: dict[str, Any]) -> None:
    """Wait ``PORTRAIT_FAULT_RECORD_DELAY_S`` before an API call's job is recorded, when that fault is set."""
    try:
        delay = float(os.environ.get(FAULT_RECORD_DELAY_S) or 0)
    except ValueError:
        logger.warning("fault injection: %s is not a number of seconds; ignored", FAULT_RECORD_DELAY_S)
        return
    marker = os.environ.get(FAULT_PROMPT_MARKER, "")
    if delay <= 0 or marker not in str(fields.get("prompt", "")) or adopted_event() is not None:
        return
    logger.warning("fault injection: this call's job is recorded after %g s", delay)
    await anyio.sleep(delay)
