"""What ``ProcessSupervisor`` (``balancer.supervision.supervisor``) needs of a supervised process: a ``Child``.

The kinds of child are in ``balancer.supervision.children`` (node parts, HAProxy), ``balancer.supervision.standby``
and ``balancer.multihost.keepalived``; one that cannot even be started raises ``StartFailed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from balancer.haproxy.runtime_protocol import ServerState
from balancer.supervision.hang import ProbeAnswer


class StartFailed(RuntimeError):
    """A supervised process could not be started; the message says why."""


class Child(Protocol):
    """How to run one supervised process; ``ProcessSupervisor`` decides when."""

    log_path: Path
    probe_target: str
    """What ``probe`` asks (a URL, a socket), for the log."""

    @property
    def pid(self) -> int | None:
        """PID of the running process, None when there is none."""

    async def start(self) -> int:
        """Start the process and return its PID; ``StartFailed`` when it could not be started."""

    async def wait(self) -> int:
        """The exit status of the process started last, once it has exited."""

    async def probe(self) -> ProbeAnswer:
        """Whether the process answers, and is ready to serve."""

    async def stop(self) -> int | None:
        """Stop it gracefully (SIGKILL after a grace period); its exit status."""

    async def kill(self) -> int | None:
        """Stop it now, with no grace (it is stuck); its exit status."""

    async def tell_haproxy(self, state: ServerState) -> None:
        """Tell HAProxy the process is ``ready``, ``drain``-ing or out (``maint``)."""

    async def aclose(self) -> None:
        """Release what the child holds (clients, ...) once supervision ends."""
