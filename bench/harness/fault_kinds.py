"""The five fault kinds of issue 21, each one operation for ``bench.harness.fault_load.run_fault``.

Each causes its fault while the load runs, waits (bounded) until the cluster has settled and every client was
served again, and reports a ``Fault``: when it came, when the cluster had settled, and what it saw.

1. ``front_killed``: a node host's web front SIGKILLed (its sidecar restarts it), a ``gradio_client`` pinned to it.
2. ``returned_front_busy``: that front killed and back; its first calls (the pinned client's, three new pinned
   clients') beside CPU hogs under the documented 0.5 s checks; counted from its return.
3. ``holder_daemons_killed``: the address holder's HAProxy and keepalived SIGKILLed (``pair_crash``).
4. ``holder_cut``: the holder's link down with jobs in flight, then back up.
5. ``workers_killed``: both workers of a one-box cluster SIGKILLed at the same moment.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

from balancer.haproxy.process import status_is_out
from balancer.multihost.keepalived import STATE_FILE
from bench.harness.fault_load import Fault, served, small_job
from bench.harness.front_return import check_failures, cpu_hogs, pinned_headers, web_front_pid
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.hosts_cluster import HostsCluster
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import CALL_TIMEOUT, FAILED, OK, Clock, LoadClient, Record
from bench.harness.pair import BALANCERS, PairCluster
from bench.harness.pair_crash import AddressWatch, crash_holder_mid_traffic
from bench.harness.resends import advised_call
from bench.harness.waiting import wait_until

RETURNING = "node1"
"""The node whose web front is killed and comes back; the ``gradio_client`` is pinned to it."""
SETTLE_S = 2.0
"""Seconds of load after the cluster settled (a late effect still counts)."""
WAIT_S = 120.0
"""The longest any one step of a fault may take."""
FIRST_CALLERS = 3
"""New pinned clients whose first calls go to the returned front (besides the load's own)."""

Operation = Callable[[Clock, list[LoadClient]], Fault]


def _served_again(clients: list[LoadClient], clock: Clock, what: str) -> None:
    """Wait until every load client had a call that started from now on succeed."""
    since = clock.now()
    wait_until(lambda: served(clients, since), what, WAIT_S)


def _kill_front_until_back(cluster: HostsCluster) -> float:
    """SIGKILL ``RETURNING``'s web front; wait until it is out, then back UP at full health; seconds it took."""
    killed = time.monotonic()
    os.kill(web_front_pid(cluster, RETURNING), signal.SIGKILL)
    wait_until(lambda: status_is_out(cluster.statuses().get(f"webs/{RETURNING}", "")), "the killed front out", 10, 0.02)
    cluster.wait_all_up(timeout=WAIT_S)
    return time.monotonic() - killed


def front_killed(cluster: HostsCluster) -> Operation:
    def operate(clock: Clock, clients: list[LoadClient]) -> Fault:
        fault_at = clock.now()
        back_s = _kill_front_until_back(cluster)
        _served_again(clients, clock, "every client served after the front's return")
        time.sleep(SETTLE_S)
        return Fault(fault_at, clock.now(), notes=[f"{RETURNING}'s front back in rotation after {back_s:.1f} s"])
    return operate


def returned_front_busy(cluster: HostsCluster) -> Operation:
    def operate(clock: Clock, clients: list[LoadClient]) -> Fault:
        _kill_front_until_back(cluster)  # not counted: kind 1
        log = cluster.run_dirs["b"] / "haproxy.log"
        offset, failed_before = log.stat().st_size, check_failures(cluster, RETURNING)
        seen: set[str] = set()
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.02):
                seen.add(cluster.statuses().get(f"webs/{RETURNING}", "?"))

        records: list[Record] = []

        def first_calls(index: int) -> None:
            caller = GradioApiClient(cluster.url + "/", call_timeout=CALL_TIMEOUT, headers=pinned_headers(RETURNING))
            try:
                for _ in range(2):
                    records.append(advised_call(clock, f"first{index}", "gradio_client",
                                                lambda: caller.generate(small_job(f"first{index}")),
                                                resend_refusals=True))
            finally:
                caller.close()

        fault_at = clock.now()
        threads = [threading.Thread(target=watch)] + [
            threading.Thread(target=first_calls, args=(i,)) for i in range(FIRST_CALLERS)]
        with cpu_hogs():
            for thread in threads:
                thread.start()
            for thread in threads[1:]:
                thread.join(timeout=WAIT_S)
            wait_until(lambda: served(clients, fault_at), "every load client served beside the hogs", WAIT_S)
        done.set()
        threads[0].join()
        time.sleep(SETTLE_S)
        with log.open("rb") as lines:
            lines.seek(offset)
            downs = lines.read().decode(errors="replace").count(f"webs/{RETURNING} is DOWN")
        failed = check_failures(cluster, RETURNING) - failed_before
        notes = [f"{RETURNING}'s front marked DOWN {downs} times, {failed} failed checks; statuses {sorted(seen)}"]
        return Fault(fault_at, clock.now(), counted_from=fault_at, notes=notes, records=records)
    return operate


def holder_daemons_killed(cluster: PairCluster) -> Operation:
    def operate(clock: Clock, clients: list[LoadClient]) -> Fault:
        crashed = crash_holder_mid_traffic(cluster, timeout=WAIT_S)
        pages = [Record("pages", "page", True, o.started - clock.t0, o.started + o.seconds - clock.t0,
                        OK if o.ok else FAILED, o.detail, attempts=o.attempts) for o in crashed.browser.outcomes]
        _served_again(clients, clock, "every client served after the crash")
        time.sleep(SETTLE_S)
        figures = crashed.figures()
        notes = [f"{crashed.holder}'s HAProxy and keepalived back; address on {figures['final_holders']} after "
                 f"{figures['settled_after_s']} s; keepalived started {figures['keepalived_starts']} time(s)"]
        return Fault(crashed.crashed_at - clock.t0, clock.now(), both_held_s=crashed.both_held_s(), notes=notes,
                     records=pages)
    return operate


def holder_cut(cluster: PairCluster) -> Operation:
    def operate(clock: Clock, clients: list[LoadClient]) -> Fault:
        holder = wait_until(cluster.holder, "a balancer holding the address", 30, 0.1)
        api = cluster.apis[holder]
        watch = AddressWatch(cluster, cluster.run_dirs[holder] / STATE_FILE)
        watch.start()
        try:
            try:
                busy = wait_until(lambda: sum(s.current_sessions > 0 for s in api.servers("workers")) == 2,
                                  "both workers running a job", 30, 0.02)
            except TimeoutError:
                busy = False
            cut_at, fault_at = time.monotonic(), clock.now()
            cluster.lab.set_link(holder, False)
            moved_to = wait_until(lambda: (now := cluster.holder()) != holder and now, "the address moved", 30, 0.02)
            moved_s = time.monotonic() - cut_at
            _served_again(clients, clock, "every client served after the cut")
            healed_at = time.monotonic()
            cluster.lab.set_link(holder, True)
            wait_until(lambda: time.monotonic() - watch.samples[-1][0] < 0.2 and len(watch.samples[-1][1]) == 1
                       and time.monotonic() - healed_at > 3, "the address on one balancer after the heal", 30, 0.1)
            for host in BALANCERS.values():
                cluster.api = cluster.apis[host]
                cluster.wait_all_up(timeout=WAIT_S)
            _served_again(clients, clock, "every client served after the heal")
            time.sleep(SETTLE_S)
        finally:
            watch.stop.set()
            watch.join(timeout=10)
            holders = watch.samples[-1][1] if watch.samples else ()
            cluster.api = cluster.apis[holders[0] if len(holders) == 1 else holder]
        spans = watch.both_held()
        at_heal = sum(to - since for since, to in spans if since >= healed_at)
        notes = [f"both workers busy: {bool(busy)}; address on {moved_to} after {moved_s:.2f} s; "
                 f"both held {at_heal:.2f} s of it after the link came back"]
        return Fault(fault_at, clock.now(), both_held_s=sum(to - since for since, to in spans), notes=notes)
    return operate


def workers_killed(cluster: LaunchedCluster) -> Operation:
    def operate(clock: Clock, clients: list[LoadClient]) -> Fault:
        nodes = cluster.node_names
        before = {node: cluster.part_status(node, "worker") for node in nodes}
        fault_at, killed = clock.now(), time.monotonic()
        for node in nodes:  # the same moment: no worker is left to take a job
            os.kill(before[node]["pid"], signal.SIGKILL)
        for node in nodes:
            cluster.wait_restarted(node, "worker", before[node]["restarts"] + 1, timeout=WAIT_S)
        back_s = time.monotonic() - killed
        _served_again(clients, clock, "every client served after the restarts")
        time.sleep(SETTLE_S)
        return Fault(fault_at, clock.now(), notes=[f"both workers ready again after {back_s:.1f} s"])
    return operate
