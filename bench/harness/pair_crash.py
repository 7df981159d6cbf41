"""The address holder's HAProxy and keepalived crash (SIGKILL) while its host and sidecar live on.

``crash_holder_mid_traffic`` loads the page through the floating address with the client's documented
resend advice (``AdvisedResends``: docs/api.md), SIGKILLs every HAProxy and keepalived process of the
balancer holding the address (all SIGSTOPped first: none runs a handler, as in a crash), and watches
until the sidecar has both back. ``AddressWatch`` samples ``ip -o addr`` in both balancer namespaces
every 50 ms (and the crashed balancer's keepalived state file), so a moment with the address on both
balancers shows. ``CrashedHolder`` says what it cost; ``tests/test_pair_restart.py`` checks it.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import psutil

from balancer.multihost.keepalived import STATE_FILE
from bench.harness.pair import BALANCERS, Outcome, PairCluster
from bench.harness.resends import RESEND_PAUSES
from bench.harness.waiting import wait_until

DAEMONS = ("haproxy", "keepalived")
"""The processes that crash: the sidecar (and its jobs service) live on."""
SAMPLE_EVERY = 0.05
HOLDING = ("MASTER", "BACKUP")
"""The VRRP states of a keepalived that runs and can hold the address."""
SIDECAR_LINE = re.compile(r"^(\S+ \S+) \w+ [\w.]+: balancer/(keepalived|haproxy): (started pid|ready after)")


@dataclass
class AdvisedResends:
    """A client that follows the resend advice: on a connection error, a reset, a timeout or a 503 with
    ``Retry-After`` it resends after each of ``RESEND_PAUSES``, then gives up."""

    client: httpx.Client
    outcomes: list[Outcome] = field(default_factory=list)

    def get(self, path: str) -> httpx.Response | None:
        """GET ``path`` with the advised resends; its answer (None when the resends ran out)."""
        started, detail = time.monotonic(), ""
        for attempt, pause in enumerate((*RESEND_PAUSES, None), start=1):
            try:
                response = self.client.get(path)
            except httpx.TransportError as exc:
                detail = type(exc).__name__
            else:
                if not (response.status_code == 503 and "retry-after" in response.headers):
                    ok = response.is_success
                    self.outcomes.append(Outcome(started, time.monotonic() - started, attempt, ok,
                                                 "" if ok else f"HTTP {response.status_code}"))
                    return response
                detail = "HTTP 503"
            if pause is not None:
                time.sleep(pause)
        self.outcomes.append(Outcome(started, time.monotonic() - started, len(RESEND_PAUSES) + 1, False, detail))
        return None


class AddressWatch(threading.Thread):
    """Samples which balancers have the floating address (and ``state_file``'s writes) every ``SAMPLE_EVERY``."""

    def __init__(self, cluster: PairCluster, state_file: Path) -> None:
        super().__init__(daemon=True)
        self.cluster, self.state_file = cluster, state_file
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        """(monotonic time, the balancer hosts holding the address)."""
        self.state_writes: list[tuple[float, str]] = []
        """(wall-clock mtime, content) of each version of the state file seen."""
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            lab, address = self.cluster.lab, self.cluster.floating
            self.samples.append((time.monotonic(), tuple(h for h in BALANCERS.values() if lab.has_address(h, address))))
            with contextlib.suppress(OSError):
                seen = (self.state_file.stat().st_mtime, self.state_file.read_text().strip())
                if not self.state_writes or self.state_writes[-1][0] != seen[0]:
                    self.state_writes.append(seen)
            self.stop.wait(SAMPLE_EVERY)

    def both_held(self) -> list[tuple[float, float]]:
        """(from, to) monotonic spans in which both balancers held the address (to: the next sample)."""
        pairs = zip(self.samples, self.samples[1:], strict=False)
        return [(at, following) for (at, holders), (following, _) in pairs if len(holders) > 1]


def crash_daemons(cluster: PairCluster, host: str) -> list[int]:
    """SIGSTOP, then SIGKILL, every HAProxy and keepalived process of balancer ``host`` (ours: in its namespace)."""
    procs = []
    for pid in cluster.lab.pids(host):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            if proc.name() in DAEMONS:
                procs.append(proc)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)
    return [proc.pid for proc in procs]


def sidecar_events(log: Path, since: float) -> list[tuple[float, str, str]]:
    """(wall time, part, event) of each 'started pid' and 'ready after' line of a sidecar's log since ``since``."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        if match := SIDECAR_LINE.match(line):
            at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if at >= since:
                events.append((at, match[2], match[3]))
    return events


def sidecar_log(cluster: PairCluster, host: str) -> Path:
    """The log of balancer ``host``'s launch.py (its sidecar's log lines)."""
    logs = [Path(proc.log_path) for proc in cluster.lab.processes.procs]
    return next(log for log in logs if log.name.startswith(f"pair-{host}-"))


@dataclass
class CrashedHolder:
    """What the crash of the holder's HAProxy and keepalived cost, as sampled and logged."""

    holder: str
    peer: str
    crashed_pids: list[int]
    crashed_at: float
    """Monotonic time of the SIGKILL."""
    watch: AddressWatch
    browser: AdvisedResends
    events: list[tuple[float, str, str]]
    """The crashed balancer's sidecar: (wall time, part, 'started pid' or 'ready after'), since the crash."""
    keepalived_log: str
    """What keepalived wrote to its log since the crash."""

    def both_held_s(self) -> float:
        """Seconds (to the sampling's precision) in which both balancers held the address."""
        return sum(to - since for since, to in self.watch.both_held())

    def keepalived_starts(self) -> int:
        """keepalived starts by the crashed balancer's sidecar since the crash."""
        return sum(part == "keepalived" and event == "started pid" for _, part, event in self.events)

    def ready_before_state(self) -> list[float]:
        """Wall times at which the sidecar said keepalived ready before keepalived's notify script had written a
        state for that start (the file is removed at each start; log times are to the millisecond)."""
        early, started = [], None
        for at, part, event in self.events:
            if part != "keepalived":
                continue
            if event == "started pid":
                started = at
            elif started is None or not any(started <= mtime <= at + 0.001 for mtime, _ in self.watch.state_writes):
                early.append(at)
        return early

    def figures(self) -> dict[str, object]:
        """Measured seconds and counts, rounded; times from the SIGKILL."""
        held = self.watch.both_held()
        after = [(at, holders) for at, holders in self.watch.samples if at > self.crashed_at]
        released = next((at for at, holders in after if self.holder not in holders), None)
        changes = [at for (_, before), (at, holders) in zip(after, after[1:], strict=False) if holders != before]
        pages = self.browser.outcomes
        return {
            "both_held_s": round(self.both_held_s(), 2),
            "both_held_from_s": round(held[0][0] - self.crashed_at, 2) if held else None,
            "both_held_until_s": round(held[-1][1] - self.crashed_at, 2) if held else None,
            "holder_released_s": round(released - self.crashed_at, 2) if released is not None else None,
            "settled_after_s": round(changes[-1] - self.crashed_at, 2) if changes else None,
            "final_holders": list(after[-1][1]) if after else None,
            "address_samples": len(self.watch.samples),
            "keepalived_starts": self.keepalived_starts(),
            "keepalived_already_running": self.keepalived_log.count("already running"),
            "page_requests": len(pages), "page_requests_resent": sum(o.attempts > 1 for o in pages),
            "page_requests_failed": sum(not o.ok for o in pages),
            "page_failures": sorted({o.detail for o in pages if not o.ok}),
        }


def crash_holder_mid_traffic(cluster: PairCluster, before: float = 1.0, settle: float = 1.5,
                             timeout: float = 20.0) -> CrashedHolder:
    """Page loads every 0.1 s through the floating address (advised resends) and the address sampled; after
    ``before`` s, crash the holder's HAProxy and keepalived; go on until its sidecar has said both ready again
    and the address is on one balancer, then ``settle`` s more."""
    holder = cluster.holder()
    assert holder is not None, "no balancer holds the floating address"
    peer = next(host for host in BALANCERS.values() if host != holder)
    run_dir = cluster.run_dirs[holder]
    keepalived_log = run_dir / "logs" / "keepalived.log"
    log_offset = keepalived_log.stat().st_size
    watch = AddressWatch(cluster, run_dir / STATE_FILE)
    browser = AdvisedResends(httpx.Client(base_url=cluster.url, timeout=httpx.Timeout(5, connect=1)))
    stop = threading.Event()

    def browse() -> None:
        while not stop.is_set():
            browser.get("/")
            stop.wait(0.1)

    threads = [watch, threading.Thread(target=browse, daemon=True)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(before)
        crashed_wall, crashed_at = time.time(), time.monotonic()
        pids = crash_daemons(cluster, holder)
        log = sidecar_log(cluster, holder)

        def back() -> bool:
            ready = {part for _, part, event in sidecar_events(log, crashed_wall) if event == "ready after"}
            said = any(at >= crashed_wall and state in HOLDING for at, state in watch.state_writes)
            return ready == set(DAEMONS) and said and len(watch.samples[-1][1]) == 1

        wait_until(back, f"{holder}'s HAProxy and keepalived back (ready, keepalived saying its state), the address "
                   "on one balancer", timeout, 0.1)
        time.sleep(settle)
    finally:
        stop.set()
        watch.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        browser.client.close()
    with keepalived_log.open(errors="replace") as text:
        text.seek(log_offset)
        logged = text.read()
    return CrashedHolder(holder=holder, peer=peer, crashed_pids=pids, crashed_at=crashed_at, watch=watch,
                         browser=browser, events=sidecar_events(log, crashed_wall), keepalived_log=logged)
