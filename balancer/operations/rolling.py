"""The rolling restart: the operation that restarts every managed node, one at a time.

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
(the nodes after it are untouched and stay in rotation) and reports it as failed. It waits for a quiet
moment with ``balancer.operations.waiting.QuietSwitch``, and runs as one operation at a time
(``balancer.operations.runner``).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from balancer.operations.node_control import NodeControl, Traffic
from balancer.operations.runner import OperationReport
from balancer.operations.waiting import NodeFailed, QuietSwitch, wait_for
from balancer.supervision.supervisor import ProcessSupervisor


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


class RollingRestart:
    """Restarts every managed node, one at a time, with no request failed (see the module doc)."""

    def __init__(self, control: NodeControl, request: RollingRestartRequest, ready_timeout: float,
                 handoff: bool = False) -> None:
        """``handoff``: the web fronts run on jobs (``jobs.web_fronts``) and hand their clients on as they stop."""
        self.control = control
        self.request = request
        self.ready_timeout = request.ready_timeout or ready_timeout
        self.handoff = handoff
        self.quiet = QuietSwitch(control, request.drain_timeout, request.settle)
        """Parks and unparks the web front at quiet moments."""

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
            waited = await self.quiet.switch_when_quiet(node, lambda: self.node_traffic(node), webs, True, report)
            if waited is None:
                back = "left drained, as it was" if already_drained else "put back in rotation"
                raise NodeFailed(f"still serving requests after {self.request.drain_timeout:g} s (drain_timeout: "
                                 f"{self.quiet.busy}); {back}, not restarted")
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
            await self.quiet.park(webs, False)
            if not already_drained:
                await self.control.drain(node, False)
        if not already_drained:
            await wait_for(lambda: self.server_states(node, {"UP"}), self.ready_timeout,
                           f"HAProxy did not take {node} back (UP)")
            report.log(node, "back in rotation")

    async def unpark_when_quiet(self, node: str, webs: list[tuple[str, str]], report: OperationReport) -> None:
        """Unpark the web front once no request with its cookie was in flight for ``settle`` s (step 5)."""
        waited = await self.quiet.switch_when_quiet(node, lambda: self.control.sticky_traffic(node), webs, False,
                                                    report)
        if waited is None:
            report.log(node, f"its sticky clients were never idle for {self.request.settle:g} s within "
                       f"{self.request.drain_timeout:g} s: they come back to it now, a job under way may fail")
            await self.quiet.park(webs, False)
        else:
            report.log(node, f"its sticky clients idle after {waited:.1f} s; its web front takes them back")
        webs.clear()  # nothing left to unpark

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

        await wait_for(fresh, self.ready_timeout,
                       f"did not come back within {self.ready_timeout:g} s (see its log); left to its supervisor")
        await wait_for(lambda: self.server_states(node, {"DRAIN", "UP"}, parts=("worker",)), self.ready_timeout,
                       "came back but HAProxy's health checks did not pass")
        return time.monotonic() - start

    async def server_states(self, node: str, states: set[str], parts: tuple[str, ...] = ("web", "worker")) -> bool:
        """Whether the balancers have every server of ``node``'s ``parts`` in one of ``states``."""
        return await self.control.server_states(node, states, parts)
