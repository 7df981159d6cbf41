"""What a supervisor knows about its process (``PartStatus``), and who hears of its changes (``PartObserver``).

The record is the supervisor's; the sidecar's API (``balancer.api``) shows it in ``/status`` and counts its
changes in ``/metrics``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from balancer.supervision.causes import Death, DeathCause

BALANCER = "balancer"
"""The pseudo-node HAProxy is a part of (metric labels, ``crash_looped``, ``POST /retry/balancer/haproxy``)."""


class PartState(str, Enum):
    """Life cycle of a supervised process."""

    STARTING = "starting"
    """Started, not ready yet (model loading); out of rotation."""
    READY = "ready"
    """Answering its readiness probe; in rotation."""
    UNREADY = "unready"
    """Alive but failing its readiness probe (restarted if that lasts)."""
    BACKOFF = "backoff"
    """Dead, waiting before the next restart."""
    CRASH_LOOP = "crash_loop"
    """Died too often: no more restarts, left in maint."""
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class PartStatus:
    """What one supervisor knows about its process (a node's web front or worker, or HAProxy)."""

    node: str
    part: str
    backend: str | None
    """The HAProxy backend of a node part's server; None for HAProxy itself."""
    url: str
    state: PartState = PartState.STOPPED
    pid: int | None = None
    restarts: int = 0
    last_cause: DeathCause | None = None
    last_detail: str = ""
    last_returncode: int | None = None
    deaths: Counter = field(default_factory=Counter)
    started_at: float | None = None
    ready_at: float | None = None
    crash_looped: bool = False
    gpu: str | None = None
    """A worker's ``CUDA_VISIBLE_DEVICES``, when it has one."""
    drained: bool = False
    """An operator drained its node (``POST /drain/NODE``)."""
    standby: Callable[[], dict] | None = None
    """A worker's warm standby's view (``balancer.supervision.standby.StandbyWorker.snapshot``), when it has one."""

    def snapshot(self, now: float) -> dict:
        """JSON-ready view, with uptime of the current process."""
        snapshot = {
            "state": self.state.value,
            "admin": "drain" if self.drained else "ready",
            "pid": self.pid,
            "url": self.url,
            "backend": self.backend,
            "restarts": self.restarts,
            "last_cause": self.last_cause.value if self.last_cause else None,
            "last_detail": self.last_detail,
            "last_returncode": self.last_returncode,
            "deaths": {cause.value: count for cause, count in self.deaths.items()},
            "uptime": round(now - self.started_at, 3) if self.started_at is not None and self.pid else None,
            "ready_for": round(now - self.ready_at, 3) if self.ready_at is not None else None,
            "crash_looped": self.crash_looped,
        }
        if self.gpu is not None:
            snapshot["gpu"] = self.gpu
        if self.standby is not None:
            snapshot["standby"] = self.standby()
        return snapshot


class PartObserver(Protocol):
    """Hears of every change of a supervised part (the sidecar's metrics, ``balancer.api.metrics``)."""

    def register(self, status: PartStatus) -> None:
        """A new part: its series exist before anything happens."""

    def set_state(self, status: PartStatus) -> None:
        """Its state changed."""

    def record_death(self, status: PartStatus, death: Death) -> None:
        """It died (``death.cause``)."""

    def record_restart(self, status: PartStatus) -> None:
        """It was restarted."""
