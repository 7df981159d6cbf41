"""Which of Gradio's routes a request is for, read from the mounted app's own route table.

``RequestGuard`` treats a few Gradio routes specially: bodies that put a job in the queue are
checked, direct calls that would run a queued event outside the queue are refused, and event
streams count as a client listening. ``GradioRoutes`` finds, for each role, one route Gradio 6
serves it at (an anchor), takes that route's endpoint, and gives the role to every route the
same endpoint serves: Gradio serves one endpoint at several shapes (``/run/`` and ``/api/``,
``/call/<api>/<id>`` and ``/call/v2/<api>/<id>``, with and without a trailing slash). A request
resolves as Starlette resolves it: to the first route in table order whose path and method
match. A Gradio without an anchor route fails at start-up instead of going unguarded.

``client_id_problems`` checks the ids a client chooses (session hashes, event and upload ids):
Gradio keys per-client state by them, so they are held to a length and an alphabet.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import APIRoute
from gradio.route_utils import API_PREFIX
from starlette.routing import BaseRoute
from starlette.types import Scope

from webui.contract import CLIENT_ID

CLIENT_ID_NAMES = ("session_hash", "event_id", "upload_id")


class Role(enum.Enum):
    """What a Gradio route does, as far as the guard cares."""

    QUEUE_ENTRY = "puts a job in the queue"
    DIRECT_CALL = "runs an event outside the queue"
    CALL_STREAM = "streams a curl-style call's event (its id in the path)"
    QUEUE_STREAM = "streams a session's events (page, gradio_client)"
    OTHER = "anything else"


ANCHORS: dict[tuple[str, str], Role] = {
    ("POST", "/queue/join"): Role.QUEUE_ENTRY,
    ("POST", "/call/{api_name}"): Role.QUEUE_ENTRY,
    ("POST", "/call/v2/{api_name}"): Role.QUEUE_ENTRY,
    ("POST", "/run/{api_name}"): Role.DIRECT_CALL,
    ("GET", "/call/{api_name}/{event_id}"): Role.CALL_STREAM,
    ("GET", "/queue/data"): Role.QUEUE_STREAM,
}
"""One route per role (under Gradio's ``API_PREFIX``); its endpoint's other routes share the role."""


@dataclass(frozen=True)
class Resolved:
    """A request's route: its role and path parameters."""

    role: Role
    params: dict[str, str] = field(default_factory=dict)


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """The FastAPI routes of a table, in order, looking inside included routers (FastAPI ≥ 0.16x
    keeps an included router whole; Gradio includes its API router without a prefix)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)


class GradioRoutes:
    """The roles of a mounted Gradio app's routes (see the module)."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self._routes = list(api_routes(routes))
        roles = {}
        for (method, path), role in ANCHORS.items():
            anchor = next((r for r in self._routes if r.path == API_PREFIX + path and method in r.methods), None)
            if anchor is None:
                raise RuntimeError(f"Gradio serves no {method} {API_PREFIX}{path}: check its pin in requirements.txt")
            roles[anchor.endpoint] = role
        self._roles = [roles.get(route.endpoint, Role.OTHER) for route in self._routes]

    def resolve(self, scope: Scope) -> Resolved:
        """The role and path parameters of the route that serves ``scope``."""
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        for route, role in zip(self._routes, self._roles, strict=True):
            match = route.path_regex.match(path)
            if match and (not route.methods or scope["method"] in route.methods):
                return Resolved(role, match.groupdict())
        return Resolved(Role.OTHER)


def client_id_problems(values: Mapping[str, Any]) -> list[str]:
    """The names of client ids among ``values`` that break ``CLIENT_ID`` (None is no id, and fine)."""
    return [name for name in CLIENT_ID_NAMES if name in values and values[name] is not None
            and not (isinstance(values[name], str) and CLIENT_ID.fullmatch(values[name]))]
