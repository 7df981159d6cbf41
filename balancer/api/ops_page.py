"""The operations page (``GET /operations``), for studios without Prometheus: live figures, the nodes with their
state and last restart cause, Drain / Ready buttons, and plots of the last hour. Served by the sidecar behind the
stats page's user and password, like every action it takes; its buttons post to ``/drain/NODE`` and
``/ready/NODE`` (``balancer.api.same_origin`` refuses those from other sites).

The page is a shell whose script fetches ``GET /operations/panel`` (the fragment of ``balancer.api.ops_panel``)
every ``REFRESH_MS``; no framework, no outside resource, a Content-Security-Policy that runs only that script.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Awaitable, Callable

from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from balancer.api.basic_auth import OPERATOR
from balancer.api.haproxy_view import HAProxyView
from balancer.api.ops_history import OpsHistory, Sample
from balancer.api.ops_panel import panel_html

Snapshot = Callable[[], Awaitable[tuple[dict, HAProxyView | None]]]
"""Reads the ``/status`` document and HAProxy's view of the same moment."""
REFRESH_MS = 2000
"""How often the page asks for the panel again."""

SCRIPT = """
const panel = document.getElementById('panel'), note = document.getElementById('note');
const message = document.getElementById('message');
async function refresh() {
  try {
    const answer = await fetch('/operations/panel', {cache: 'no-store', credentials: 'same-origin'});
    if (!answer.ok) throw new Error('the sidecar answered ' + answer.status);
    panel.innerHTML = await answer.text();
    note.textContent = 'Updated ' + new Date().toLocaleTimeString();
    note.className = '';
  } catch (error) {
    note.textContent = 'Cannot reach the sidecar (' + error.message + '); trying again.';
    note.className = 'error';
  }
}
panel.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button) return;
  const action = button.dataset.action, node = button.dataset.node;
  button.disabled = true;
  const answer = await fetch('/' + action + '/' + encodeURIComponent(node),
                             {method: 'POST', credentials: 'same-origin'});
  const body = await answer.json().catch(() => ({}));
  message.textContent = answer.ok ? node + (action === 'drain' ? ': drained, new jobs go elsewhere.' :
    ': back in rotation.') : node + ': ' + (body.detail || 'the sidecar answered ' + answer.status);
  message.className = answer.ok ? '' : 'error';
  await refresh();
});
refresh();
setInterval(refresh, REFRESH_MS);
""".replace("REFRESH_MS", str(REFRESH_MS))

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #f6f7f9; }
h1 { font-size: 1.3rem; margin: 0 0 .2rem; } #note, #message { color: #5b6476; min-height: 1.2em; }
.error, .alert { color: #a61b1b; } .alert { background: #fdecec; padding: .5rem .8rem; border-radius: 6px; }
.figures { display: flex; flex-wrap: wrap; gap: .8rem; margin: 1rem 0; }
.figure { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: .6rem .8rem; }
.figure .value { font-size: 1.6rem; font-weight: 600; } .figure .label { color: #5b6476; }
.spark polyline { fill: none; stroke: #2f6fde; stroke-width: 1.5; } .spark circle { fill: #2f6fde; }
.spark line { stroke: #dde1e8; } .window { color: #5b6476; margin: .6rem 0 0; }
#figure-failed .spark polyline { stroke: #c0392b; } #figure-failed .spark circle { fill: #c0392b; }
table { border-collapse: collapse; background: #fff; border: 1px solid #dde1e8; }
th, td { text-align: left; padding: .45rem .7rem; border-bottom: 1px solid #eceff3; vertical-align: top; }
.state.ready { color: #17803d; } .state.backoff, .state.starting, .state.unready { color: #b26b00; }
.state.crash_loop { color: #a61b1b; font-weight: 600; } .cause small { color: #5b6476; }
button { font: inherit; padding: .25rem .8rem; border-radius: 6px; border: 1px solid #9aa3b5; background: #fff; }
button:disabled { opacity: .45; }
"""


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>portrait-ha operations</title><style>{STYLE}</style></head>
<body><h1>portrait-ha operations</h1><div id="note">Loading…</div><div id="message" role="status"></div>
<main id="panel"></main><script>{SCRIPT}</script></body></html>"""
HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; connect-src 'self'; style-src 'sha256-{_sha256(STYLE)}'; "
                               f"script-src 'sha256-{_sha256(SCRIPT)}'; frame-ancestors 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
"""Only this page's own script and style run; no other site may frame it (a click on Drain through a frame)."""


def operations_routes(snapshot: Snapshot, history: OpsHistory) -> list[Route]:
    """``GET /operations`` and ``GET /operations/panel``, both for the operator only (401 otherwise)."""

    @requires(OPERATOR, status_code=401)
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE, headers=HEADERS)

    @requires(OPERATOR, status_code=401)
    async def panel(request: Request) -> HTMLResponse:
        document, view = await snapshot()
        figures = history.figures(Sample.of(document, view, time.monotonic()))
        return HTMLResponse(panel_html(document, figures, history.span), headers=HEADERS)

    return [Route("/operations", page), Route("/operations/panel", panel)]


def sampler(snapshot: Snapshot) -> Callable[[], Awaitable[Sample]]:
    """What ``OpsHistory`` reads every interval: a sample from ``snapshot``."""

    async def read() -> Sample:
        document, view = await snapshot()
        return Sample.of(document, view, time.monotonic())

    return read
