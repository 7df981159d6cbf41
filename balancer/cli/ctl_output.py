"""What ``python -m balancer.cli`` prints for people (``--json`` prints the sidecar's documents instead): the
``status`` table, a ``drain`` / ``ready`` line, an operation's progress lines."""

from __future__ import annotations

COLUMNS = ("NODE", "PART", "STATE", "ADMIN", "HAPROXY", "PID", "GPU", "RESTARTS", "LAST CAUSE", "ACTIVE", "QUEUED")


def status_rows(document: dict) -> list[tuple[str, ...]]:
    """One table row per node part of a ``/status`` document (``-`` where there is nothing to say)."""
    rows = []
    for node, parts in sorted(document.get("nodes", {}).items()):
        for part, entry in sorted(parts.items()):
            server = entry.get("server") or {}
            cells = (node, part, entry.get("state"), entry.get("admin"), server.get("status"), entry.get("pid"),
                     entry.get("gpu"), entry.get("restarts"), entry.get("last_cause"), server.get("sessions"),
                     server.get("queued"))
            rows.append(tuple("-" if cell is None else str(cell) for cell in cells))
    return rows


def format_status(document: dict) -> str:
    """The human table of ``status``, with the backends' queues and crash loops under it."""
    rows = [COLUMNS, *status_rows(document)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    queued = document.get("queued")
    if queued is not None:
        lines.append("queued in HAProxy: " + ", ".join(f"{name} {count}" for name, count in sorted(queued.items())))
    else:
        lines.append("HAProxy's view (HAPROXY, ACTIVE, QUEUED) unavailable: it did not answer the sidecar.")
    floating = document.get("floating")
    if floating is not None:
        state = floating.get("state")
        held = {"MASTER": "this balancer holds it", None: "keepalived has not said yet"}.get(state, "held elsewhere")
        lines.append(f"floating address {floating.get('address')}: {state or 'unknown'} ({held})")
    if document.get("crash_looped"):
        lines.append("crash-looped: " + ", ".join(document["crash_looped"]))
    return "\n".join(lines)


def format_admin(answer: dict) -> str:
    """The human line of ``drain`` / ``ready``."""
    servers = ", ".join(f"{server} {state}" for server, state in answer.get("servers", {}).items())
    return f"{answer.get('node')}: {answer.get('admin')} ({servers})"


def format_event(event: dict) -> str:
    """One progress line of an operation."""
    node = f"{event['node']}: " if event.get("node") else ""
    return f"[{event.get('t', 0):7.1f} s] {node}{event.get('message', '')}"
