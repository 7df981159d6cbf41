"""The sidecar's actions need the stats page's user and password; reading does not.

Every ``POST`` route of ``status_app`` is behind starlette's ``AuthenticationMiddleware`` and
``requires`` (``balancer.api.basic_auth``): without the right credentials it answers 401 with the
challenge, naming the action, before it looks at the body; with them it gets past the check. In
process (starlette's ``TestClient``), no sidecar started.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from starlette.routing import Route
from starlette.testclient import TestClient

from balancer.api.basic_auth import BasicAuth
from balancer.api.metrics import SidecarMetrics
from balancer.api.routes import OperationRoutes, status_app

USER, PASSWORD = "admin", "a-long-stats-password"


def app_and_actions() -> tuple[TestClient, list[str]]:
    """A client of a sidecar app with nothing behind it, and the path of each of its POST routes."""
    operations = OperationRoutes(rolling_restart=lambda body: {"kind": "rolling-restart"}, current=lambda: None,
                                 add_node=lambda body: {"kind": "add-node"},
                                 remove_node=lambda node, body: {"kind": "remove-node"})
    app = status_app(lambda: [], SidecarMetrics(), lambda node, part: None, BasicAuth(USER, SecretStr(PASSWORD)),
                     gpus=dict, operations=operations)
    paths = [route.path.replace("{node}", "n1").replace("{part}", "worker") for route in app.routes
             if isinstance(route, Route) and "POST" in (route.methods or set())]
    return TestClient(app), paths


ACTIONS = app_and_actions()[1]


def test_every_action_is_found() -> None:
    assert sorted(ACTIONS) == ["/add-node", "/drain/n1", "/ready/n1", "/remove-node/n1", "/retry/n1/worker",
                               "/rolling-restart"]


@pytest.mark.parametrize("path", ACTIONS)
@pytest.mark.parametrize("auth", [None, (USER, "wrong"), ("intruder", PASSWORD)], ids=["none", "password", "user"])
def test_an_action_without_the_stats_password_is_refused(path: str, auth: tuple[str, str] | None) -> None:
    client, _ = app_and_actions()
    answer = client.post(path, auth=auth, content=b"not json")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Basic realm="portrait-ha sidecar"'
    action = "POST /" + path.split("/")[1]
    assert answer.json() == {"error": "unauthorized", "fields": [],
                             "detail": f"{action} needs the stats page's user and password (HTTP basic auth)."}


@pytest.mark.parametrize("path", ACTIONS)
def test_an_action_with_the_stats_password_gets_past_the_check(path: str) -> None:
    client, _ = app_and_actions()
    answer = client.post(path, auth=(USER, PASSWORD), json={})
    assert answer.status_code != 401, answer.text


def test_reading_needs_no_password() -> None:
    client, _ = app_and_actions()
    for path in ("/status", "/metrics", "/healthz"):
        assert client.get(path).status_code == 200, path
