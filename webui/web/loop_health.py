"""The web front's event loop kept free for HAProxy's checks, and a warning naming whatever blocks it.

HAProxy's checks (``/readyz``) are answered on the same event loop as every Gradio call; with the multi-host
example's 0.5 s check timeout, a loop blocked for about a second fails two checks in a row and the front is
marked DOWN, its streams cut (``on-marked-down shutdown-sessions``). Gradio wraps every call in a matplotlib
backend switch (``gradio.utils.MatplotlibBackendMananger``): where matplotlib is installed, the first call of a
process imported it and, to resolve its automatic backend, ``matplotlib.pyplot``, inside the loop (0.9 s here,
more on a loaded machine). ``settle_matplotlib`` does that once at start-up, before the front serves, with the
backend named (``agg``), so no call imports anything.

``LoopWatch`` logs a warning whenever the loop did not run for ``threshold`` seconds or more: how long, and the
loop thread's stack as seen while it was blocked. The next such cause is found in the web front's log, not guessed
from HAProxy's.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
import threading
import time
import traceback

logger = logging.getLogger(__name__)

TICK = 0.1
"""Seconds between two beats of the loop (and two looks of the watcher)."""
THRESHOLD = 0.25
"""Seconds without a beat that count as a blocked loop: half the multi-host example's check timeout."""
FRAMES = 12
"""The innermost frames of the loop thread's stack that a warning shows."""


def settle_matplotlib() -> None:
    """Import matplotlib with the ``agg`` backend named (no GUI, no pyplot) if it is installed; else nothing."""
    if importlib.util.find_spec("matplotlib") is None:
        return
    import matplotlib

    matplotlib.use("agg")  # named: matplotlib.get_backend() no longer imports pyplot to resolve "auto"


class LoopWatch:
    """A beat on the event loop every ``TICK`` s, and a daemon thread that warns when it stops for ``threshold`` s."""

    def __init__(self, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self.beat = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        """Start beating on the running loop, and watching from a thread."""
        self.beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="loop-watch")
        threading.Thread(target=self._watch, args=(threading.get_ident(),), name="loop-watch", daemon=True).start()

    async def stop(self) -> None:
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()

    async def _beat(self) -> None:
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(TICK)

    def _watch(self, loop_thread: int) -> None:
        stack: str | None = None  # where the loop was seen blocked, until it runs again
        blocked_since = self.beat
        while not self._stopped.wait(TICK):
            beat = self.beat
            if stack is not None and beat != blocked_since:
                logger.warning("the event loop was blocked for %.2f s (HAProxy's checks waited meanwhile) in:\n%s",
                               beat - blocked_since - TICK, stack)
                stack = None
            elif stack is None and time.monotonic() - beat - TICK >= self.threshold:
                frame = sys._current_frames().get(loop_thread)
                stack = "".join(traceback.format_stack(frame)[-FRAMES:]).rstrip() if frame else "(no stack)"
                blocked_since = beat
