"""``restart_loop``: the one restart loop a supervised process and a warm standby share.

In process, on a fake clock: deaths are counted and handed on, restarts wait the policy's backoff, a crash
loop ends the loop unless an operator's retry goes on, and an attempt that ends without a death ends it.
"""

from __future__ import annotations

import asyncio

from balancer.supervision.restart_policy import RestartPolicy, restart_loop


class Script:
    """Attempts that answer the given outcomes in turn, and a record of what the loop did."""

    def __init__(self, outcomes: list[str | None], retries: list[bool]) -> None:
        self.outcomes, self.retries = list(outcomes), list(retries)
        self.events: list[str] = []
        self.now = 0.0
        self.policy = RestartPolicy(1.0, 8.0, crash_loop_deaths=3, crash_loop_window=60.0, clock=lambda: self.now)

    async def attempt(self) -> str | None:
        self.events.append("start")
        return self.outcomes.pop(0)

    def died(self, cause: str) -> None:
        self.events.append(f"died {cause}")

    async def crash_looped(self) -> bool:
        go_on = self.retries.pop(0)
        self.events.append(f"crash loop, {'retry' if go_on else 'give up'}")
        if go_on:
            self.policy.forget_deaths()
        return go_on

    async def back_off(self, delay: float) -> bool:
        self.events.append(f"wait {delay:g}")
        self.now += delay + 1
        return True

    def run(self) -> list[str]:
        asyncio.run(restart_loop(self.policy, self.attempt, self.died, self.crash_looped, self.back_off))
        return self.events


def test_a_process_that_stops_dying_runs_until_its_stop() -> None:
    assert Script(["crash", None], []).run() == ["start", "died crash", "wait 0", "start"]


def test_restarts_back_off_then_a_crash_loop_gives_up() -> None:
    assert Script(["a", "b", "c", "d"], [False]).run() == [
        "start", "died a", "wait 0", "start", "died b", "wait 1", "start", "died c", "crash loop, give up"]


def test_a_retry_after_a_crash_loop_starts_afresh() -> None:
    assert Script(["a", "b", "c", "d", None], [True]).run() == [
        "start", "died a", "wait 0", "start", "died b", "wait 1", "start", "died c", "crash loop, retry",
        "start", "died d", "wait 0", "start"]


def test_a_stop_during_the_backoff_ends_the_loop() -> None:
    script = Script(["a", "b"], [])

    async def stopped(delay: float) -> bool:
        script.events.append("stopped while waiting")
        return False

    asyncio.run(restart_loop(script.policy, script.attempt, script.died, script.crash_looped, stopped))
    assert script.events == ["start", "died a", "stopped while waiting"]
