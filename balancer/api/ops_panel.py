"""The operations page's live part, rendered on the server as an HTML fragment (every value escaped): the figures
with a sparkline of their last hour (inline SVG), any crash loop, and a row per node with its state, HAProxy's
view, its restarts, the last restart's cause, and its Drain / Ready buttons."""

from __future__ import annotations

from html import escape

from balancer.api.ops_history import Figures

CAUSE_WORDS = {
    "oom_killer": "killed by the kernel: out of memory",
    "oom_exit": "out of GPU memory",
    "load_failed": "the model did not load",
    "hung": "hung, replaced",
    "stuck": "stopped answering, replaced",
    "signal": "killed by a signal",
    "crash": "crashed",
    "exit": "exited on its own",
}
"""A restart cause (``balancer.supervision.causes.DeathCause``) in a studio's words."""
PARTS = (("worker", "Worker"), ("web", "Web front"))
WIDTH, HEIGHT = 180, 34
"""A sparkline's size in pixels."""


def sparkline(points: list[tuple[float, float]], window: float, label: str) -> str:
    """An inline SVG line of (seconds ago, value) points over the last ``window`` seconds, now at the right edge."""
    top = max([1.0, *(value for _, value in points)])
    coords = [(WIDTH * (1 - min(ago, window) / window), HEIGHT - 2 - (HEIGHT - 4) * value / top)
              for ago, value in points]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    last = f'<circle cx="{coords[-1][0]:.1f}" cy="{coords[-1][1]:.1f}" r="2"/>' if coords else ""
    return (f'<svg class="spark" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{escape(label)}, highest {top:g}"><title>{escape(label)}: highest {top:g}</title>'
            f'<line x1="0" y1="{HEIGHT - 2}" x2="{WIDTH}" y2="{HEIGHT - 2}"/><polyline points="{line}"/>{last}</svg>')


def _figure(key: str, value: str, label: str, figures: Figures, series: str, window: float) -> str:
    return (f'<div class="figure" id="figure-{key}"><div class="value">{escape(value)}</div>'
            f'<div class="label">{escape(label)}</div>{sparkline(figures.series(series), window, label)}</div>')


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def covered(seconds: float) -> str:
    """How long a plot's window is, in words."""
    if seconds >= 3599:
        return "hour"
    return f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} seconds"


def figures_html(figures: Figures, span: float) -> str:
    """The row of figures, each with its plot of the window the history covers (the last hour once it has one)."""
    now, window = figures.now, figures.window(span)
    return f'<p class="window">Plots: the last {covered(window)}.</p><section class="figures">' + "".join([
        _figure("workers", f"{now.workers_ready} / {now.workers_configured}", "workers ready / configured", figures,
                "workers_ready", window),
        _figure("queued", _count(now.queued), "jobs queued", figures, "queued", window),
        _figure("running", _count(now.running), "jobs running", figures, "running", window),
        _figure("done", str(figures.done_last_hour), "jobs done, last hour", figures, "done", window),
        _figure("failed", str(figures.failed_last_hour), "jobs failed, last hour", figures, "failed", window),
    ]) + "</section>"


def _cause(part: str, snapshot: dict) -> str:
    cause = snapshot.get("last_cause")
    if not cause:
        return ""
    words = CAUSE_WORDS.get(cause, cause)
    return (f'<div class="cause" data-part="{part}" data-cause="{escape(cause)}">{escape(part)}: {escape(words)}'
            f' <small>{escape(snapshot.get("last_detail") or "")}</small></div>')


def node_row(node: str, parts: dict) -> str:
    """One node's row."""
    states = "".join(
        f'<td class="state {escape(parts[part]["state"])}">{escape(parts[part]["state"])}</td>' if part in parts
        else "<td>–</td>" for part, _ in PARTS)
    servers = [f'{escape(name)} {escape(parts[part]["server"]["status"])}' for part, name in PARTS
               if "server" in parts.get(part, {})]
    drained = any(snapshot["admin"] == "drain" for snapshot in parts.values())
    restarts = sum(snapshot["restarts"] for snapshot in parts.values())
    causes = "".join(_cause(part, parts[part]) for part, _ in PARTS if part in parts)
    name = escape(node)
    buttons = (f'<button type="button" data-action="drain" data-node="{name}"{" disabled" if drained else ""}>'
               f'Drain</button> <button type="button" data-action="ready" data-node="{name}"'
               f'{"" if drained else " disabled"}>Ready</button>')
    return (f'<tr id="node-{name}" data-node="{name}" data-admin="{"drain" if drained else "ready"}"><th>{name}</th>'
            f'{states}<td class="admin">{"drained" if drained else "in rotation"}</td>'
            f'<td class="haproxy">{"<br>".join(servers) or "?"}</td><td class="restarts">{restarts}</td>'
            f'<td class="causes">{causes or "–"}</td><td class="actions">{buttons}</td></tr>')


def panel_html(document: dict, figures: Figures, span: float) -> str:
    """The whole live part of the page for a ``/status`` document and the figures of the same moment."""
    looped = document.get("crash_looped") or []
    alert = (f'<p class="alert">Crash loop, no longer restarted: {escape(", ".join(looped))}. Fix the cause, then '
             "<code>POST /retry/NODE/PART</code> (docs/operations.md).</p>" if looped else "")
    head = "".join(f"<th>{label}</th>" for _, label in PARTS)
    rows = "".join(node_row(node, parts) for node, parts in sorted(document["nodes"].items()))
    return (f"{figures_html(figures, span)}{alert}<table class=\"nodes\"><thead><tr><th>Node</th>{head}"
            "<th>Operator</th><th>In HAProxy</th><th>Restarts</th><th>Last restart cause</th><th></th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")
