"""The load around a fault (issue 21): REST loops and a ``gradio_client`` loop that resend as docs/api.md advises.

``fault_clients`` makes the clients: ``rest`` REST loops (``POST /generate``, TCP keep-alive, a read timeout above the
slowest job) and one reused ``gradio_client`` (optionally pinned to a web front by its cookie), each resending a
failed call after 0.5 s, 1 s, 2 s (``bench.harness.resends``). ``run_fault`` runs them while ``operate`` (in its own
thread, once every client was served) causes one fault and waits until the cluster settled; the records and what
``operate`` reported become a ``FaultRun`` (``bench.harness.fault_figures``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count

import httpx

from bench.harness.fault_figures import FaultRun
from bench.harness.generation import Job
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.load import CALL_TIMEOUT, OK, Clock, LoadClient, Record, under_load
from bench.harness.resends import advised_call
from bench.harness.rest_client import RestClient
from bench.harness.waiting import wait_until
from webui import keepalive

REST_READ_TIMEOUT_S = 30.0
"""docs/api.md: a ``/generate`` client's read timeout is longer than its slowest job; keep-alive ends a dead wait."""
RUN_LIMIT_S = 180.0
"""The longest one fault's load may run (then its clients stop, whatever ``operate`` waits for)."""
WARM_S = 30.0
"""The longest the clients may take to be served once each before the fault."""
_seeds = count(5000)


def small_job(client: str) -> Job:
    """A small job with a seed of its own (the stand-in's latency is fixed whatever the size)."""
    return Job(prompt=f"studio portrait, {client}", steps=2, width=64, height=64, seed=next(_seeds))


@dataclass
class Fault:
    """What ``operate`` reports: when the fault came and the cluster had settled (on the load's clock), and more."""

    fault_at: float
    settled_at: float
    counted_from: float = float("-inf")
    both_held_s: float | None = None
    notes: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    """Calls made by ``operate`` itself (e.g. first calls of a returned web front), counted with the load's."""


def fault_clients(url: str, clock: Clock, closers: list[Callable[[], None]], rest: int = 2,
                  gradio_headers: dict[str, str] | None = None) -> list[LoadClient]:
    """``rest`` REST loops and one ``gradio_client`` loop on ``url``; each client's ``close`` goes to ``closers``."""
    clients = []
    for index in range(rest):
        client = RestClient(url, timeout=REST_READ_TIMEOUT_S,
                            transport=httpx.HTTPTransport(socket_options=keepalive.socket_options()))
        closers.append(client.close)
        name = f"rest{index + 1}"
        clients.append(LoadClient(name, lambda i, c=client, n=name: advised_call(
            clock, n, "rest", lambda: c.generate_unhashed(small_job(n)))))
    gradio = GradioApiClient(url.rstrip("/") + "/", call_timeout=CALL_TIMEOUT, headers=gradio_headers)
    closers.append(gradio.close)
    clients.append(LoadClient("gradio", lambda i: advised_call(
        clock, "gradio", "gradio_client", lambda: gradio.generate(small_job("gradio")), resend_refusals=True)))
    return clients


def served(clients: list[LoadClient], after: float) -> bool:
    """Whether every client had a call that started after ``after`` and succeeded."""
    return all(any(r.outcome == OK and r.start >= after for r in client.records) for client in clients)


def run_fault(kind: str, url: str, operate: Callable[[Clock, list[LoadClient]], Fault],
              gradio_headers: dict[str, str] | None = None) -> FaultRun:
    """The load on ``url`` while ``operate`` causes one fault of ``kind`` and waits for the cluster to settle."""
    clock, closers = Clock(), []
    clients = fault_clients(url, clock, closers, gradio_headers=gradio_headers)
    reported: dict[str, Fault | BaseException] = {}

    def operator(stop: threading.Event) -> None:
        try:
            wait_until(lambda: served(clients, 0.0), "every client served once before the fault", WARM_S, 0.1)
            reported["fault"] = operate(clock, clients)
        except BaseException as exc:  # reported by the caller's thread
            reported["fault"] = exc

    records = under_load(clients, closers, operator, RUN_LIMIT_S)
    fault = reported.get("fault")
    if not isinstance(fault, Fault):
        raise RuntimeError(f"{kind}: the fault did not complete within {RUN_LIMIT_S:g} s: {fault!r}") from fault
    return FaultRun(kind, records + fault.records, fault.fault_at, fault.settled_at, fault.counted_from,
                    fault.both_held_s, os.getloadavg()[0], fault.notes)
