"""Bounded concurrent load: N client threads, each looping over its calls until a deadline.

``LoadRunner.run`` starts one thread per ``LoadClient`` and stops them all when the
duration has passed or each has made its ``max_requests``; every call becomes a ``Record``
(when it started and ended on the run's clock, what it was, how it ended). The run is
bounded both in time and in count, and a call in flight is always waited for, so the
result counts every request that was sent.

A call is either *good* (must return a valid image) or *malformed* (must be refused with a
readable message that names the problem): ``timed_call`` classifies the outcome as ``ok``,
``rejected`` (a malformed call refused as it should be) or ``failed``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from balancer.haproxy.names import HOLDING_SERVER, WORKERS_BACKEND
from balancer.haproxy.runtime_api import RuntimeAPI
from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import CallFailed, Job, Rejected, Reply
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.rest_client import RestClient

OK = "ok"
REJECTED = "rejected"
FAILED = "failed"
CALL_TIMEOUT = 60.0
"""Seconds one gradio_client call of the load may take: a hang becomes a failed record, not a test timeout."""


@dataclass(frozen=True)
class Record:
    """One request of a load run, on the run's clock (seconds since it started)."""

    client: str
    kind: str
    good: bool
    start: float
    end: float
    outcome: str
    detail: str = ""
    worker_id: str | None = None
    web_node: str | None = None
    attempts: int = 1

    @property
    def latency(self) -> float:
        """Seconds from sending to the answer."""
        return self.end - self.start

    @property
    def lost(self) -> bool:
        """A good request that did not get its image."""
        return self.good and self.outcome != OK


class Clock:
    """Seconds since a fixed start, shared by the load and the events a benchmark records."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        """Seconds since the clock was created."""
        return time.monotonic() - self.t0


def timed_call(clock: Clock, client: str, kind: str, good: bool, call: Callable[[], Reply],
               expect_in_message: Sequence[str] = ()) -> Record:
    """Run ``call`` and classify it.

    Good calls are ``ok`` when they return a ``Reply``. Malformed calls are ``rejected``
    when the server refused them with a message containing every word of
    ``expect_in_message`` and no traceback; any other answer to them is ``failed``.
    """
    start = clock.now()
    try:
        reply = call()
    except Rejected as exc:
        message = str(exc)
        readable = "Traceback" not in message and all(word in message for word in expect_in_message)
        if good:
            outcome, detail = FAILED, f"refused: {message}"
        elif readable:
            outcome, detail = REJECTED, message
        else:
            outcome, detail = FAILED, f"unclear refusal (wanted {list(expect_in_message)}): {message}"
        return Record(client, kind, good, start, clock.now(), outcome, detail[:500])
    except CallFailed as exc:
        return Record(client, kind, good, start, clock.now(), FAILED, str(exc)[:500])
    except Exception as exc:  # a client bug or an answer it cannot read: a failed request, not a crash
        return Record(client, kind, good, start, clock.now(), FAILED, f"unexpected {type(exc).__name__}: {exc}"[:500])
    end = clock.now()
    if not good:
        return Record(client, kind, good, start, end, FAILED, "a malformed request was accepted", reply.worker_id)
    return Record(client, kind, good, start, end, OK, "", reply.worker_id, reply.web_node, reply.attempts)


@dataclass
class LoadClient:
    """One simulated user: ``next_call(i)`` makes its ``i``-th request and returns its record."""

    name: str
    next_call: Callable[[int], Record]
    max_requests: int = 1000
    pause: float = 0.0
    """Seconds to wait between two requests (think time)."""
    records: list[Record] = field(default_factory=list)


class Poller:
    """Calls ``poll()`` every ``interval`` seconds in a background thread during a ``with`` block."""

    def __init__(self, interval: float, name: str) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def poll(self) -> None:
        """One observation; subclasses record what they see."""
        raise NotImplementedError

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)


class LoadRunner:
    """Runs ``LoadClient``s concurrently for a bounded time and count."""

    def __init__(self, clients: Sequence[LoadClient], duration: float) -> None:
        self.clients = list(clients)
        self.duration = duration
        self.stop = threading.Event()

    def run(self) -> list[Record]:
        """Run every client until the deadline (or ``stop``); all records, in start order."""
        timer = threading.Timer(self.duration, self.stop.set)
        timer.daemon = True
        threads = [threading.Thread(target=self._loop, args=(c,), name=f"load-{c.name}", daemon=True)
                   for c in self.clients]
        timer.start()
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            self.stop.set()
            timer.cancel()
        return sorted((r for c in self.clients for r in c.records), key=lambda r: r.start)

    def _loop(self, client: LoadClient) -> None:
        for index in range(client.max_requests):
            if self.stop.is_set():
                return
            client.records.append(client.next_call(index))
            if client.pause and self.stop.wait(client.pause):
                return


class FewestUp(Poller):
    """The fewest servers up at any poll (every 50 ms) of ``count`` (None: no answer, not counted)."""

    def __init__(self, count: Callable[[], int | None], most: int) -> None:
        super().__init__(0.05, "fewest-up")
        self.count = count
        self.fewest = most

    def poll(self) -> None:
        seen = self.count()
        if seen is not None:
            self.fewest = min(self.fewest, seen)


def workers_up(api: RuntimeAPI) -> Callable[[], int | None]:
    """How many workers HAProxy has UP (the workers backend's servers but its backup, the jobs service), for
    ``FewestUp``; None while HAProxy does not answer."""
    def count() -> int | None:
        try:
            return sum(server.is_up for server in api.servers(WORKERS_BACKEND) if server.server != HOLDING_SERVER)
        except OSError:
            return None
    return count


def mixed_clients(url: str, clock: Clock, closers: list[Callable[[], None]], think_time: float,
                  prompt: str = "rolling portrait") -> list[LoadClient]:
    """One REST client with no pause, one reused gradio_client and one browser tab with ``think_time``
    between jobs (as a person would); each client's ``close`` is added to ``closers``."""
    clients = []
    for index, (kind, client, pause) in enumerate((
        ("rest", RestClient(url), 0.0),
        ("gradio_client", GradioApiClient(url + "/", call_timeout=CALL_TIMEOUT), think_time),
        ("browser", BrowserProtocolClient(url), think_time),
    )):
        closers.append(client.close)

        def call(i: int, index: int = index, kind: str = kind, client=client) -> Record:
            job = Job(prompt=f"{prompt} {i}", steps=2, width=256, height=256, seed=100 * index + i)
            return timed_call(clock, kind, kind, True, lambda: client.generate(job))

        clients.append(LoadClient(kind, call, max_requests=200, pause=pause))
    return clients


def under_load(clients: list[LoadClient], closers: list[Callable[[], None]],
               operate: Callable[[threading.Event], None], limit: float) -> list[Record]:
    """Run the clients until ``operate`` (in its own thread, given the runner's stop event) has ended, or
    ``limit`` seconds; every record; the clients are closed."""
    runner = LoadRunner(clients, limit)

    def operator() -> None:
        try:
            operate(runner.stop)
        finally:
            runner.stop.set()

    thread = threading.Thread(target=operator, name="operator")
    try:
        thread.start()
        records = runner.run()
        thread.join(timeout=limit)
    finally:
        for close in closers:
            close()
    return records
