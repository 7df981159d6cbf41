"""When to try a webhook delivery again: exponential back-off with jitter, capped, for a configurable window.

The defaults try after about 5 s, 10 s, 20 s … doubling up to one attempt an hour, and keep trying for 24 h after
the first attempt; the last attempt falls exactly at the window's end, so retries always span the whole window.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetrySchedule:
    """Delays between attempts; ``window_s`` is how long after the first attempt retries go on."""

    first_delay_s: float = 5.0
    factor: float = 2.0
    max_delay_s: float = 3600.0
    window_s: float = 24 * 3600.0
    jitter: float = 0.2
    """Each delay is shortened by a random fraction up to this, so many failed deliveries do not retry in step."""
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.first_delay_s > 0 and self.factor >= 1 and self.max_delay_s >= self.first_delay_s
                and self.window_s > 0 and 0 <= self.jitter < 1):
            raise ValueError("retry schedule: need first delay > 0, factor >= 1, max delay >= first delay, "
                             "window > 0 and 0 <= jitter < 1")

    def delay_s(self, attempt_number: int) -> float:
        """Seconds to wait after attempt ``attempt_number`` (1 = the first attempt) failed."""
        exponent = min(attempt_number - 1, 64)
        base = min(self.max_delay_s, self.first_delay_s * self.factor ** exponent)
        return base * (1 - self.jitter * self.random())

    def next_attempt_at(self, attempt_number: int, first_at: datetime, now: datetime) -> datetime | None:
        """When to try again after attempt ``attempt_number`` failed at ``now``; None once the window is over."""
        deadline = first_at + timedelta(seconds=self.window_s)
        if now >= deadline:
            return None
        return min(now + timedelta(seconds=self.delay_s(attempt_number)), deadline)
