"""HAProxy's runtime API as both clients (``balancer.haproxy.runtime_api``) speak it: the commands, and their
answers parsed (``show stat`` CSV -> ``ServerStatus``, ``show table``)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Literal

ServerState = Literal["ready", "drain", "maint"]

class RuntimeAPIError(RuntimeError):
    """HAProxy refused a command (its answer says why)."""


def status_is_up(status: str) -> bool:
    """An HAProxy server status that takes new traffic: fully UP (not "UP 1/2", which is on its way down)."""
    return status == "UP"


def status_is_out(status: str) -> bool:
    """An HAProxy server status out of rotation: DOWN (any check progress) or MAINT."""
    return status.startswith(("DOWN", "MAINT"))


@dataclass(frozen=True)
class ServerStatus:
    """One server's row of ``show stat``, the fields the cluster cares about."""

    backend: str
    server: str
    status: str
    """UP, DOWN, MAINT, DRAIN, "UP 1/2" (going down), "DOWN 1/2" (going up), NOLB, ..."""
    current_sessions: int
    queued: int
    total_sessions: int
    weight: int

    @property
    def is_up(self) -> bool:
        """Taking new traffic (``status_is_up``)."""
        return status_is_up(self.status)


SHOW_INFO = "show info"
SHOW_STAT = "show stat"


def answers_info(answer: str) -> bool:
    """Whether ``answer`` is a real ``show info`` answer (HAProxy is up and talking)."""
    return "Name:" in answer


def state_command(backend: str, server: str, state: ServerState) -> str:
    """The command that sets a server's administrative state."""
    return f"set server {backend}/{server} state {state}"


def check_empty_answer(command: str, answer: str) -> None:
    """``RuntimeAPIError`` unless HAProxy answered a command that succeeds silently with nothing."""
    if answer.strip():
        raise RuntimeAPIError(f"{command}: {answer.strip()}")


def parse_stat(text: str) -> list[dict[str, str]]:
    """``show stat`` CSV as a list of rows (frontends, servers, backends)."""
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


def parse_servers(rows: list[dict[str, str]], backend: str | None = None) -> list[ServerStatus]:
    """The server rows of ``show stat`` (optionally of one backend)."""
    servers = []
    for row in rows:
        if row.get("svname") in ("FRONTEND", "BACKEND") or not row.get("pxname"):
            continue
        if backend is not None and row["pxname"] != backend:
            continue
        servers.append(
            ServerStatus(
                backend=row["pxname"],
                server=row["svname"],
                status=row["status"],
                current_sessions=stat_int(row.get("scur")),
                queued=stat_int(row.get("qcur")),
                total_sessions=stat_int(row.get("stot")),
                weight=stat_int(row.get("weight")),
            )
        )
    return servers


def parse_table(text: str) -> dict[str, dict[str, str]]:
    """``show table NAME``: key -> its stored values (``{"conn_cur": "1", "use": "1", ...}``)."""
    entries = {}
    for line in text.splitlines():
        if line.startswith("#") or ": " not in line:
            continue
        fields = dict(part.split("=", 1) for part in line.split(": ", 1)[1].split() if "=" in part)
        if "key" in fields:
            entries[fields.pop("key")] = fields
    return entries


def find_server(servers: list[ServerStatus], backend: str, server: str) -> ServerStatus:
    """One server among ``servers``; ``KeyError`` if it is not there."""
    for status in servers:
        if (status.backend, status.server) == (backend, server):
            return status
    raise KeyError(f"{backend}/{server}")


def stat_int(value: str | None) -> int:
    """A number field of HAProxy's stats (empty or not a number: 0)."""
    try:
        return int(value or 0)
    except ValueError:
        return 0
