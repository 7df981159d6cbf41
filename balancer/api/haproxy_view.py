"""What HAProxy's ``show stat`` says that the sidecar shows: each server's row, each backend's queue, and how
many answers each backend has given, by class (the operations page's throughput and failures)."""

from __future__ import annotations

from dataclasses import dataclass, field

from balancer.haproxy.runtime_protocol import ServerStatus, parse_servers, stat_int


@dataclass(frozen=True)
class Answers:
    """A backend's answers since HAProxy started: ``hrsp_2xx`` and ``hrsp_5xx`` of its ``BACKEND`` row."""

    ok: int
    failed: int


@dataclass(frozen=True)
class HAProxyView:
    """What HAProxy's ``show stat`` says about the servers and the backends' queues."""

    servers: dict[tuple[str, str], ServerStatus]
    """(backend, server) -> its row."""
    queued: dict[str, int]
    """Backend -> requests waiting in its queue (for no server in particular)."""
    answers: dict[str, Answers] = field(default_factory=dict)
    """Backend -> its answers so far."""

    @classmethod
    def from_stat(cls, rows: list[dict[str, str]]) -> HAProxyView:
        """From ``show stat`` rows."""
        servers = {(server.backend, server.server): server for server in parse_servers(rows)}
        backends = [row for row in rows if row.get("svname") == "BACKEND"]
        queued = {row["pxname"]: stat_int(row.get("qcur")) for row in backends}
        answers = {row["pxname"]: Answers(stat_int(row.get("hrsp_2xx")), stat_int(row.get("hrsp_5xx")))
                   for row in backends}
        return cls(servers, queued, answers)
