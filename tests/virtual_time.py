"""An asyncio event loop on virtual time: whenever nothing is ready to run, its clock jumps to the next timer.

Code that sleeps and times out through the loop (``asyncio.sleep``, ``asyncio.wait(timeout=...)``,
``asyncio.wait_for``) and reads the loop's ``time`` then runs minutes of its life in milliseconds, and
always the same way. Real I/O still works: the selector is asked without waiting before the clock jumps.
A loop with no timer left and nothing arriving within ``IDLE_LIMIT`` real seconds is a deadlock in a test:
it raises instead of hanging. (A thread's result that is not back before the clock jumps past the timers
waiting on it arrives late: keep threads out of what runs on it.)
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

IDLE_LIMIT = 5.0
"""Real seconds an idle loop with no timer waits for I/O (a thread's result) before it calls it a deadlock."""


class Deadlock(RuntimeError):
    """Everything on the loop waits, and nothing will wake it."""


class _JumpingSelector:
    """The loop's selector, asked without waiting; a wait for a timer moves the virtual clock instead."""

    def __init__(self, loop: VirtualTimeLoop, selector: selectors.BaseSelector) -> None:
        self._loop = loop
        self._selector = selector

    def select(self, timeout: float | None = None) -> list:
        events = self._selector.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            events = self._selector.select(IDLE_LIMIT)
            if not events:
                raise Deadlock("every task waits and no timer is left to wake one")
            return events
        self._loop.now += timeout
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


START = 1000.0
"""The virtual clock's reading when a loop starts (not 0, which code may take for "unset")."""


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time`` starts at ``START`` and moves only when every task waits for a timer."""

    def __init__(self) -> None:
        self.now = START
        super().__init__(_JumpingSelector(self, selectors.DefaultSelector()))  # type: ignore[arg-type]

    def time(self) -> float:
        return self.now


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on a fresh ``VirtualTimeLoop``."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
