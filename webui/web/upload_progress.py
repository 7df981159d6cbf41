"""Gradio's upload progress tracker, bounded: what it keeps per ``upload_id`` cannot fill memory.

Gradio 6 keeps, in one process-wide ``FileUploadProgress`` (``gradio.routes.file_upload_statuses``),
a status per ``upload_id`` an upload names and an ``asyncio.Event`` per id anyone asks progress
for (``GET upload_progress?upload_id=…``). A status goes only once a progress stream reads it to
the end; the event never goes. Every id a client makes up is kept for good.

``BoundedUploadProgress`` keeps both in ``BoundedMap``s (count, bytes, age) and drops an id's
event with its status; ``install`` puts one in Gradio's place (its routes look the tracker up in
their module at each request). A progress stream whose id was pushed out ends (Gradio's
"not tracked"), and the upload itself still completes: only the progress bar stops early.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from typing import Any

import gradio.routes
from gradio.route_utils import FileUploadProgress, FileUploadProgressTracker

from webui.web.bounded import BoundedMap

logger = logging.getLogger(__name__)

MAX_UPLOADS = 4_000
"""Upload ids tracked at once (statuses and waiting progress streams together)."""
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
"""Bytes the tracked ids may take (statuses and events together)."""
UPLOAD_TTL = 600.0
"""Seconds an upload id is tracked after its last change."""


def tracker_size(upload_id: str, status: Any) -> int:
    """Bytes an id's status holds: the id, the status, its queue and progress units (one per file)."""
    units = getattr(status, "deque", ())
    return sys.getsizeof(upload_id) + sys.getsizeof(status) + sys.getsizeof(units) + sum(
        sys.getsizeof(unit) + sys.getsizeof(unit.filename) for unit in units)


def event_size(upload_id: str, event: asyncio.Event) -> int:
    """Bytes an id's event holds: the id, the event and its attributes."""
    return sys.getsizeof(upload_id) + sys.getsizeof(event) + sys.getsizeof(vars(event))


class BoundedUploadProgress(FileUploadProgress):
    """``FileUploadProgress`` whose per-id statuses and events are bounded (see the module)."""

    def __init__(self, max_uploads: int = MAX_UPLOADS, max_bytes: int = MAX_UPLOAD_BYTES,
                 ttl: float = UPLOAD_TTL) -> None:
        """At most ``max_uploads`` ids and ``max_bytes`` bytes in all: half each for statuses and events."""
        super().__init__()
        items, size = max(1, max_uploads // 2), max(1, max_bytes // 2)
        self._statuses: BoundedMap[FileUploadProgressTracker] = BoundedMap(items, size, ttl, tracker_size)
        self._signals: BoundedMap[asyncio.Event] = BoundedMap(items, size, ttl, event_size)

    def _signal(self, upload_id: str) -> asyncio.Event:
        signal = self._signals.get(upload_id)
        if signal is None:
            signal = self._signals[upload_id] = asyncio.Event()
        return signal

    def track(self, upload_id: str) -> None:
        if upload_id not in self._statuses:
            self._statuses[upload_id] = FileUploadProgressTracker(deque(), False)
            self._signal(upload_id).set()

    async def is_tracked(self, upload_id: str) -> bool:
        return await self._signal(upload_id).wait()

    def append(self, upload_id: str, filename: str, message_bytes: bytes) -> None:
        super().append(upload_id, filename, message_bytes)
        if upload_id in self._statuses:
            self._statuses[upload_id] = self._statuses[upload_id]  # counts the status's new size and age

    def stop_tracking(self, upload_id: str) -> None:
        super().stop_tracking(upload_id)
        self._signals.pop(upload_id, None)

    @property
    def nbytes(self) -> int:
        """Bytes the tracked ids hold, statuses and events."""
        return self._statuses.nbytes + self._signals.nbytes

    def __len__(self) -> int:
        """Upload ids held (with a status or a waiting progress stream)."""
        return len(self._statuses.keys() | self._signals.keys())


def install(tracker: FileUploadProgress) -> None:
    """Make ``tracker`` the one Gradio's upload routes use, in this process."""
    gradio.routes.file_upload_statuses = tracker
    logger.debug("Gradio's upload progress tracker is now %s", type(tracker).__name__)
