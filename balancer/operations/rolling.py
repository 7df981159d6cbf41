"""Operations the sidecar carries out on a running cluster, one at a time: the rolling restart.

``RollingRestart`` restarts the managed nodes one after the other, so that an update of the
code or of the model (``--model`` / ``--lora``: the workers' new command line) never fails a
request and never takes more than one node out of rotation:

1. drain the node (both servers; cookie-persistent Gradio sessions still reach its web front);
2. wait until HAProxy shows neither of its servers with a request in flight or queued (``show
   stat`` ``scur``/``qcur``) for ``settle`` seconds without a break: a Gradio job is several
   requests (join, event stream, file download) with short gaps between them, and a switch in
   such a gap would fail the rest of it; bounded by ``drain_timeout``;
3. park the web front in ``maint`` (``HAProxyGate.park``): its sticky clients now start their
   next job on another web front (a browser takes that node's cookie; a reused ``gradio_client``
   keeps the old one, which HAProxy's affinity rules hash to one live node);
4. restart both processes (``ProcessSupervisor.request_restart``: graceful stop, start at once)
   and wait until both answer their probes (the worker also HAProxy's checks), bounded by
   ``ready_timeout``;
5. unpark the web front once no request carrying its cookie has been in flight for ``settle``
   seconds (HAProxy counts them per cookie value in a stick table, wherever they were sent):
   leaving ``maint`` makes it UP at once, and the clients still holding its cookie come back to
   it, which must not happen in the middle of one of their jobs, whose files lie on the other
   web front (after ``drain_timeout`` it is unparked anyway, and the report says so); put the
   node back (``UP``); next node.

On a node host (``launch.py --role node``) its sidecar runs the same steps on that host's nodes
(``python -m balancer.cli rolling-restart --sidecar`` pointed at it): it tells every balancer each
state through its host agent and goes on once each balancer that asks took it (``HostAgent.settled``);
it counts the requests with the parts' own counters instead of HAProxy's (``balancer.operations.traffic``).

With the web fronts on jobs (``handoff``: ``jobs.web_fronts``), steps 2 and 5 wait for nothing but the worker and
the web front is not parked: a stopping web front refuses new calls with a 503 that HAProxy replays on another one,
finishes the calls joined on it, then exits, and any web front sends on a request of a call it does not have
(``webui.web.handoff``). Its clients' calls then fail neither when they never pause nor when it comes back.

A node that stays busy past ``drain_timeout`` is put back unrestarted; one that does not come
back within ``ready_timeout`` is left to its supervisor. Either way the operation stops there
(the nodes after it are untouched and stay in rotation) and reports it as failed.
``OperationRunner`` runs one operation at a time on the sidecar's event loop and keeps the
report of the last one (``GET /operation``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from balancer.haproxy.gate import ParkGuard
from balancer.supervision.supervisor import ProcessSupervisor

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.1
"""Seconds between two looks at HAProxy's or the supervisors' view while an operation waits."""

OperationState = Literal["running", "done", "failed"]


class OperationError(Exception):
    """An operation cannot be started; the message says why."""


class OperationBusy(OperationError):
    """Another operation is running (one at a time)."""


class RollingRestartRequest(BaseModel):
    """What ``POST /rolling-restart`` takes (a JSON object; every field optional)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, min_length=1, max_length=500,
                              description="The workers' new --model (unset: keep it).")
    lora: str | None = Field(None, min_length=1, max_length=500,
                             description="The workers' new --lora (unset: keep it).")
    drain_timeout: float = Field(300.0, gt=0, le=3600,
                                 description="Seconds a drained node may take to be quiet (and its sticky "
                                 "clients, before its web front takes them back).")
    ready_timeout: float | None = Field(None, gt=0, le=7200,
                                        description="Seconds a restarted node may take to be ready "
                                        "(default: the sidecar's start_timeout).")
    settle: float = Field(1.0, ge=0, le=60,
                          description="Seconds a drained node must have no request in flight before its restart.")


BodyModel = TypeVar("BodyModel", bound=BaseModel)


def parse_request(data: object, model: type[BodyModel] = RollingRestartRequest) -> BodyModel:  # type: ignore[assignment]
    """Validate a request body as ``model``; ``OperationError`` naming each bad field."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise OperationError(problems) from None


@dataclass
class OperationReport:
    """Progress and outcome of one operation, as ``GET /operation`` shows it."""

    id: int
    kind: str
    state: OperationState = "running"
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    finished: str | None = None
    error: str | None = None
    nodes: dict[str, dict] = field(default_factory=dict)
    """Node -> what happened to it: ``restarted``, old and new pids, seconds drained."""
    events: list[dict] = field(default_factory=list)
    """Progress lines: ``{"t": seconds since start, "node": ..., "message": ...}``."""
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def log(self, node: str | None, message: str) -> None:
        """One progress line (also to the sidecar's log)."""
        self.events.append({"t": round(time.monotonic() - self._t0, 2), "node": node, "message": message})
        logger.info("%s #%d: %s%s", self.kind, self.id, f"{node}: " if node else "", message)

    def finish(self, error: str | None = None) -> None:
        """Mark it done, or failed with ``error``."""
        self.state = "failed" if error else "done"
        self.error = error
        self.finished = datetime.now(UTC).isoformat(timespec="seconds")
        if error:
            logger.error("%s #%d failed: %s", self.kind, self.id, error)
        else:
            logger.info("%s #%d done", self.kind, self.id)

    def document(self) -> dict:
        """JSON-ready view."""
        return {"id": self.id, "kind": self.kind, "state": self.state, "started": self.started,
                "finished": self.finished, "error": self.error, "nodes": self.nodes, "events": self.events}


@dataclass(frozen=True)
class Traffic:
    """Requests seen by HAProxy for one node (or one cookie value): in flight now, and ever."""

    in_flight: int
    """Requests in flight or queued right now."""
    total: int
    """Requests so far (only grows): a change between two looks means one came and went."""
    routes: tuple[str, ...] = ()
    """What is in flight, where the parts name it (``METHOD /path`` by part); HAProxy's counts do not."""


class NodeControl(Protocol):
    """What an operation needs of the sidecar."""

    def managed_nodes(self) -> list[str]:
        """Names of the managed nodes, in the cluster file's order."""

    def parts_of(self, node: str) -> list[ProcessSupervisor]:
        """The supervisors of a node's parts."""

    def configure_worker(self, node: str, model: str | None, lora: str | None) -> None:
        """Change a worker's ``--model`` / ``--lora`` for its next start (in the cluster spec)."""

    async def drain(self, node: str, drained: bool) -> dict | None:
        """An operator's drain of a node, or its end (``Sidecar.drain``)."""

    async def park(self, backend: str, server: str, parked: bool, guard: ParkGuard | None = None) -> bool:
        """Keep a server in ``maint`` whatever its supervisor says (``HAProxyGate.park``), or stop; on a node host
        each balancer is told at a poll where ``guard`` agrees."""

    @property
    def switches_guarded(self) -> bool:
        """Whether ``park`` heeds its guard (a node host's balancers poll for it); else HAProxy is told at once."""

    async def node_traffic(self, node: str, parts: tuple[str, ...] = ("web", "worker")) -> Traffic:
        """Requests on the node's ``parts`` (``OSError`` when unknown; ``balancer.operations.traffic``)."""

    async def sticky_traffic(self, node: str) -> Traffic:
        """UI requests that carry ``node``'s persistence cookie (``OSError`` when unknown)."""

    async def server_states(self, node: str, states: set[str], parts: tuple[str, ...]) -> bool:
        """Whether the balancers have every server of ``node``'s ``parts`` in one of ``states`` (UP, DRAIN)."""


class NodeFailed(Exception):
    """One node of an operation could not be handled; the operation stops there."""


class RollingRestart:
    """Restarts every managed node, one at a time, with no request failed (see the module doc)."""

    def __init__(self, control: NodeControl, request: RollingRestartRequest, ready_timeout: float,
                 handoff: bool = False) -> None:
        """``handoff``: the web fronts run on jobs (``jobs.web_fronts``) and hand their clients on as they stop."""
        self.control = control
        self.request = request
        self.ready_timeout = request.ready_timeout or ready_timeout
        self.handoff = handoff
        self.busy = "busy"
        """Why the last wait for a quiet moment went on (said when it times out)."""

    async def run(self, report: OperationReport) -> None:
        """Every node in turn; the report says how far it got and why it stopped."""
        nodes = self.control.managed_nodes()
        change = {key: value for key, value in (("model", self.request.model), ("lora", self.request.lora)) if value}
        report.log(None, f"restarting {len(nodes)} nodes one at a time" + (f" with {change}" if change else ""))
        for node in nodes:
            try:
                await self.restart_node(node, report)
            except NodeFailed as exc:
                untouched = nodes[nodes.index(node) + 1:]
                report.finish(f"{node}: {exc}; stopped there" + (f" ({', '.join(untouched)} not restarted)"
                                                                 if untouched else ""))
                return
        report.finish()

    async def restart_node(self, node: str, report: OperationReport) -> None:
        """Drain, wait for the requests in flight, park the web front, restart, wait until ready,
        unpark at a quiet moment, put back."""
        parts = self.control.parts_of(node)
        entry = report.nodes.setdefault(node, {"restarted": False})
        entry["old_pids"] = {status.part: status.pid for status in (s.status for s in parts)}
        webs = [] if self.handoff else [(s.status.backend, node) for s in parts
                                         if s.status.part == "web" and s.status.backend]
        already_drained = any(supervisor.status.drained for supervisor in parts)
        await self.control.drain(node, True)
        report.log(node, "drained; waiting for its worker's requests in flight (its web front hands its clients "
                   "on as it stops)" if self.handoff else "drained; waiting for its requests in flight")
        try:
            waited = await self.switch_when_quiet(node, lambda: self.node_traffic(node), webs, True, report)
            if waited is None:
                back = "left drained, as it was" if already_drained else "put back in rotation"
                raise NodeFailed(f"still serving requests after {self.request.drain_timeout:g} s (drain_timeout: "
                                 f"{self.busy}); {back}, not restarted")
            entry["drained_s"] = round(waited, 2)
            report.log(node, f"idle after {waited:.1f} s; restarting")
            if self.request.model or self.request.lora:
                self.control.configure_worker(node, self.request.model, self.request.lora)
            for supervisor in parts:
                supervisor.request_restart()
            ready_in = await self.wait_back(node, parts, entry["old_pids"])
            entry.update(restarted=True, ready_s=round(ready_in, 2),
                         new_pids={s.status.part: s.status.pid for s in parts})
            report.log(node, f"restarted and ready after {ready_in:.1f} s")
            if webs:
                await self.unpark_when_quiet(node, webs, report)
        finally:
            await self.park(webs, False)
            if not already_drained:
                await self.control.drain(node, False)
        if not already_drained:
            await self.wait_for(lambda: self.server_states(node, {"UP"}), self.ready_timeout,
                                f"HAProxy did not take {node} back (UP)")
            report.log(node, "back in rotation")

    async def unpark_when_quiet(self, node: str, webs: list[tuple[str, str]], report: OperationReport) -> None:
        """Unpark the web front once no request with its cookie was in flight for ``settle`` s (step 5)."""
        waited = await self.switch_when_quiet(node, lambda: self.control.sticky_traffic(node), webs, False, report)
        if waited is None:
            report.log(node, f"its sticky clients were never idle for {self.request.settle:g} s within "
                       f"{self.request.drain_timeout:g} s: they come back to it now, a job under way may fail")
            await self.park(webs, False)
        else:
            report.log(node, f"its sticky clients idle after {waited:.1f} s; its web front takes them back")
        webs.clear()  # nothing left to unpark

    async def park(self, webs: list[tuple[str, str]], parked: bool, guard: ParkGuard | None = None) -> bool:
        """Park (or unpark) these web front servers (``guard``: ``NodeControl.park``); whether all were taken."""
        took = [await self.control.park(*web, parked, guard) for web in webs]
        return all(took)

    async def switch_when_quiet(self, node: str, traffic: Callable[[], Awaitable[Traffic]],
                                webs: list[tuple[str, str]], parked: bool, report: OperationReport) -> float | None:
        """Park (``parked``) or unpark ``webs`` at a moment ``traffic`` is quiet: seconds waited, None after
        ``drain_timeout`` (nothing switched then).

        Quiet: nothing in flight and no new request for ``settle`` s. A request that arrives
        between the last look and the switch may be a Gradio job's first request, whose next ones
        would then go elsewhere: so ``traffic`` is looked at once more after the switch, and if a
        request came (or a balancer did not take the switch), the switch is undone at once and the wait
        begins again: a web front restarted while a balancer still routes to it would fail jobs. On a node host a
        switch reaches each balancer at its next poll, up to an agent interval later (and there ``maint`` ends the
        web front's sessions): so it is told only at a poll where ``traffic`` is still what it was when found
        quiet, and then it stands (undoing it would split a job begun since)."""
        start = time.monotonic()
        while (left := self.request.drain_timeout - (time.monotonic() - start)) > 0:
            quiet = await self.wait_quiet(traffic, left)
            if quiet is None:
                return None
            took = await self.park(webs, parked, self.still_quiet(traffic, quiet))
            if took and self.control.switches_guarded:
                return time.monotonic() - start  # each balancer took it at a poll where it was still quiet
            try:
                slipped = (await traffic()).total != quiet.total
            except OSError:
                slipped = True
            if took and not slipped:
                return time.monotonic() - start
            await self.park(webs, not parked)
            why = "a request came just as its web front switched" if slipped else "not every balancer took the switch"
            report.log(node, f"{why}: switched back, waiting again")
        return None

    @staticmethod
    def still_quiet(traffic: Callable[[], Awaitable[Traffic]], quiet: Traffic) -> ParkGuard:
        """Whether nothing is in flight and no request came since ``quiet`` (asked again at each call)."""

        async def unchanged() -> bool:
            try:
                seen = await traffic()
            except OSError:
                return False
            return not seen.in_flight and seen.total == quiet.total

        return unchanged

    async def wait_quiet(self, traffic: Callable[[], Awaitable[Traffic]], timeout: float) -> Traffic | None:
        """The traffic once nothing was in flight and no request came for ``settle`` s (looking every
        ``POLL_INTERVAL``); None after ``timeout``."""
        start = time.monotonic()
        quiet: tuple[float, Traffic] | None = None
        while time.monotonic() - start < timeout:
            try:
                seen: Traffic | None = await traffic()
            except OSError as exc:
                seen = None  # HAProxy does not answer: nothing is known, so nothing is quiet
                self.busy = f"its request counts did not answer ({exc})"
            now = time.monotonic()
            if seen is not None and seen.in_flight:
                self.busy = f"{seen.in_flight} in flight at the last look" + (
                    f": {', '.join(seen.routes)}" if seen.routes else "")
            elif seen is not None and quiet is not None and seen.total != quiet[1].total:
                self.busy = "new requests kept coming"
            if seen is None or seen.in_flight or (quiet is not None and seen.total != quiet[1].total):
                quiet = None
            elif quiet is None:
                quiet = (now, seen)
            if quiet is not None and now - quiet[0] >= self.request.settle:
                return quiet[1]
            await asyncio.sleep(POLL_INTERVAL)
        return None

    async def node_traffic(self, node: str) -> Traffic:
        """Requests on ``node``'s web front and worker (only its worker with ``handoff``), as its sidecar counts them
        (``balancer.operations.traffic``)."""
        return await self.control.node_traffic(node, ("worker",) if self.handoff else ("web", "worker"))

    async def wait_back(self, node: str, parts: list[ProcessSupervisor], old_pids: dict) -> float:
        """Seconds until every part runs a new process that is ready and passes HAProxy's checks."""
        start = time.monotonic()

        def fresh() -> bool:
            return all(s.status.pid not in (None, old_pids.get(s.status.part)) and s.status.state.value == "ready"
                       for s in parts)

        await self.wait_for(fresh, self.ready_timeout,
                            f"did not come back within {self.ready_timeout:g} s (see its log); left to its "
                            "supervisor")
        await self.wait_for(lambda: self.server_states(node, {"DRAIN", "UP"}, parts=("worker",)), self.ready_timeout,
                            "came back but HAProxy's health checks did not pass")
        return time.monotonic() - start

    async def server_states(self, node: str, states: set[str], parts: tuple[str, ...] = ("web", "worker")) -> bool:
        """Whether the balancers have every server of ``node``'s ``parts`` in one of ``states``."""
        return await self.control.server_states(node, states, parts)

    @staticmethod
    async def wait_for(check: Callable[[], bool | Awaitable[bool]], timeout: float, failure: str) -> None:
        """Poll ``check`` (plain or async) until true; ``NodeFailed(failure)`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outcome = check()
            if outcome if isinstance(outcome, bool) else await outcome:
                return
            await asyncio.sleep(POLL_INTERVAL)
        raise NodeFailed(failure)


class OperationRunner:
    """Runs one operation at a time in the background; keeps the report of the last one."""

    def __init__(self) -> None:
        self.last: OperationReport | None = None
        self._task: asyncio.Task | None = None
        self._ids = itertools.count(1)

    @property
    def busy(self) -> bool:
        """Whether an operation is running."""
        return self._task is not None and not self._task.done()

    def start(self, kind: str, run: Callable[[OperationReport], Awaitable[None]]) -> OperationReport:
        """Start ``run`` as operation ``kind``; ``OperationBusy`` while another one runs."""
        self.check_free()
        report = OperationReport(id=next(self._ids), kind=kind)
        self.last = report
        self._task = asyncio.create_task(self._guarded(run, report))
        return report

    def check_free(self) -> None:
        """``OperationBusy`` while an operation runs."""
        if self.busy:
            assert self.last is not None
            raise OperationBusy(f"{self.last.kind} #{self.last.id} is still running (one operation at a time); "
                                "see GET /operation")

    @staticmethod
    async def _guarded(run: Callable[[OperationReport], Awaitable[None]], report: OperationReport) -> None:
        try:
            await run(report)
        except asyncio.CancelledError:
            report.finish("cancelled: the sidecar is stopping")
            raise
        except Exception as exc:  # reported, never lost: the sidecar keeps running
            logger.exception("%s #%d crashed", report.kind, report.id)
            report.finish(f"internal error: {type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        """Cancel a running operation (the sidecar stops)."""
        if self.busy:
            assert self._task is not None
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
