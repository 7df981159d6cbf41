"""HAProxy's runtime API: its admin UNIX socket, one connection per command.

- ``RuntimeAPI``: blocking, for synchronous callers (tests, benchmarks, ``HAProxyProcess.start``).
- ``AsyncRuntimeAPI``: ``asyncio``, for everything on the sidecar's event loop; a timeout per command.

Both speak the same commands and share their parsing (``balancer.haproxy.runtime_protocol``).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from balancer.haproxy.runtime_protocol import (
    SHOW_INFO,
    SHOW_STAT,
    RuntimeAPIError,
    ServerState,
    ServerStatus,
    answers_info,
    check_empty_answer,
    find_server,
    parse_servers,
    parse_stat,
    parse_table,
    state_command,
)

DEFAULT_TIMEOUT = 5.0
"""Seconds one command may take, connecting included."""
DELETE_WAIT = 8.0
"""Seconds ``del server`` is retried while HAProxy still holds connections to the server: a request in flight,
or an idle one kept for reuse, closed within ``pool-purge-delay`` (5 s by default)."""
DELETE_RETRY = 0.1
"""Seconds between two tries of ``del server``."""


# --- the clients ----------------------------------------------------------------------------------


class RuntimeAPI:
    """The runtime API, blocking (``OSError``, ``TimeoutError`` included, when the socket fails)."""

    def __init__(self, socket_path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def command(self, line: str) -> str:
        """Send one command, return HAProxy's full answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def ping(self) -> bool:
        """Whether the socket answers."""
        try:
            return answers_info(self.command(SHOW_INFO))
        except OSError:
            return False

    def set_server_state(self, backend: str, server: str, state: ServerState) -> None:
        """``ready`` (normal), ``drain`` (no new sessions) or ``maint`` (no traffic at all)."""
        command = state_command(backend, server, state)
        check_empty_answer(command, self.command(command))

    def show_stat(self) -> list[dict[str, str]]:
        """``show stat`` as a list of rows (frontends, servers, backends)."""
        return parse_stat(self.command(SHOW_STAT))

    def servers(self, backend: str | None = None) -> list[ServerStatus]:
        """Status of every server (optionally of one backend)."""
        return parse_servers(self.show_stat(), backend)

    def server(self, backend: str, server: str) -> ServerStatus:
        """Status of one server; ``KeyError`` if HAProxy has no such server."""
        return find_server(self.servers(backend), backend, server)


class AsyncRuntimeAPI:
    """The runtime API on an asyncio event loop; never blocks it.

    Each command (connect, send, read to the end) must finish within ``timeout`` seconds, else
    ``TimeoutError``; a missing or refused socket raises ``OSError`` (``TimeoutError`` is one too).
    """

    def __init__(self, socket_path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    async def command(self, line: str) -> str:
        """Send one command, return HAProxy's full answer."""
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
            try:
                writer.write(line.encode() + b"\n")
                await writer.drain()
                answer = await reader.read()
            finally:
                writer.close()
        return answer.decode(errors="replace")

    async def ping(self) -> bool:
        """Whether the socket answers."""
        try:
            return answers_info(await self.command(SHOW_INFO))
        except OSError:
            return False

    async def set_server_state(self, backend: str, server: str, state: ServerState) -> None:
        """``ready`` (normal), ``drain`` (no new sessions) or ``maint`` (no traffic at all)."""
        command = state_command(backend, server, state)
        check_empty_answer(command, await self.command(command))

    async def show_stat(self) -> list[dict[str, str]]:
        """``show stat`` as a list of rows (frontends, servers, backends)."""
        return parse_stat(await self.command(SHOW_STAT))

    async def servers(self, backend: str | None = None) -> list[ServerStatus]:
        """Status of every server (optionally of one backend)."""
        return parse_servers(await self.show_stat(), backend)

    async def show_table(self, table: str) -> dict[str, dict[str, str]]:
        """A stick table's entries: key -> stored values (``parse_table``)."""
        answer = await self.command(f"show table {table}")
        if not answer.startswith("#"):
            raise RuntimeAPIError(f"show table {table}: {answer.strip()}")
        return parse_table(answer)

    async def server(self, backend: str, server: str) -> ServerStatus:
        """Status of one server; ``KeyError`` if HAProxy has no such server."""
        return find_server(await self.servers(backend), backend, server)

    async def add_server(self, backend: str, server: str, address: str, options: str, agent: bool) -> None:
        """Add a server at runtime (in ``maint``, as every added server starts), then switch on its health
        check (and its agent check): ``add server`` leaves both off. ``RuntimeAPIError`` when refused."""
        command = f"add server {backend}/{server} {address} {options}"
        answer = await self.command(command)
        if "New server registered" not in answer:
            raise RuntimeAPIError(f"{command}: {answer.strip()}")
        checks = ["health"] if " check " in f" {options} " else []
        lines = [f"enable {check} {backend}/{server}" for check in checks + (["agent"] if agent else [])]
        if agent:
            # An added server's agent starts out down, and an agent that answers only a weight or maxconn
            # never raises it: say it is up (as at HAProxy's start); a "down" answer still takes it down.
            lines.append(f"set server {backend}/{server} agent up")
        for line in lines:
            check_empty_answer(line, await self.command(line))

    async def delete_server(self, backend: str, server: str, wait: float = DELETE_WAIT) -> None:
        """Delete a server added at runtime: ``maint`` first (HAProxy deletes only those, once no
        connection is left on them: asked again for up to ``wait`` seconds). ``RuntimeAPIError`` when refused."""
        await self.set_server_state(backend, server, "maint")
        command = f"del server {backend}/{server}"
        deadline = asyncio.get_running_loop().time() + wait
        while "Server deleted" not in (answer := await self.command(command)):
            if "still has connections" not in answer or asyncio.get_running_loop().time() > deadline:
                raise RuntimeAPIError(f"{command}: {answer.strip()}")
            await asyncio.sleep(DELETE_RETRY)
