"""The rendered haproxy.cfg stays readable: one short line of why per directive group, no history.

Rendered (no HAProxy started) for every cluster file in assets/ and for variants of each that switch
on the optional parts (basic auth, a trusted proxy, limits off): every comment fits one line of at most
``MAX_COMMENT`` characters and tells no history (issue numbers, commit ids, timings: docs/haproxy.md
keeps those), every frontend/backend is introduced by a comment, and inside one no more than
``MAX_UNEXPLAINED`` directives follow each other without a comment saying why. The templates are
shipped as package data.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest

from balancer.config.loading import load_cluster_file, parse_cluster
from balancer.haproxy.config import render_config
from bench.harness.processes import REPO

MAX_COMMENT = 110
"""Characters a comment line of the rendered file may have, indentation included."""
MAX_UNEXPLAINED = 8
"""Directives in a row inside a frontend or backend with no comment between them (server lines excepted)."""
HISTORY = re.compile(r"\bissues? \d|#\d{3,}|\bcommits? [0-9a-f]{7,}|\b\d+(\.\d+)? ?ms\b|\bmeasured\b|\bbenchmark",
                     re.IGNORECASE)
"""What belongs in docs/haproxy.md, not in a comment of the rendered file."""
CLUSTER_FILES = sorted((REPO / "assets").glob("cluster*.yaml"))
TLS_FILES = ("ca.crt", "queue-ca.crt", "lb.pem")


def variants(data: dict, users: Path) -> Iterator[tuple[str, dict]]:
    """The cluster file as it is, and with each optional part of haproxy.cfg switched on or off."""
    yield "as is", data
    changed = copy.deepcopy(data)
    changed["users_file"] = str(users)
    yield "basic auth", changed
    changed = copy.deepcopy(data)
    changed.setdefault("limits", {}).update(rate_limit_key="x-forwarded-for", max_client_connections=4)
    changed["public_hosts"] = ["studio.example", ".example.org"]
    yield "behind a proxy", changed
    changed = copy.deepcopy(data)
    changed.setdefault("limits", {}).update(rate_limit_per_minute=0, max_client_connections=0, max_client_bodies=0)
    yield "limits off", changed
    changed = copy.deepcopy(data)
    changed.setdefault("jobs", {}).update(relay=False)
    yield "stream relay off", changed


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``cluster file: variant`` -> its haproxy.cfg (TLS paths resolve from a folder with stand-in files)."""
    folder = tmp_path_factory.mktemp("render")
    (folder / "certs").mkdir()
    for name in TLS_FILES:
        (folder / "certs" / name).write_text("not read when rendering\n", encoding="utf-8")
    users = folder / "users"
    users.write_text("studio:$6$salt$hash\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the cluster files' relative TLS paths
        # The temp folder's path as the short stand-in a checkout's is: its length is the machine's, not ours.
        return {f"{path.name}: {name}": render_config(parse_cluster(data)).replace(str(folder), "/srv/studio")
                for path in CLUSTER_FILES for name, data in variants(load_cluster_file(path), users)}


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


def test_every_cluster_file_is_rendered(rendered: dict[str, str]) -> None:
    assert len(CLUSTER_FILES) >= 3 and len(rendered) == 5 * len(CLUSTER_FILES)


def test_comments_are_one_short_line_without_history(rendered: dict[str, str]) -> None:
    for name, text in rendered.items():
        too_long = [line for line in comments(text) if len(line) > MAX_COMMENT]
        assert not too_long, f"{name}: comment lines over {MAX_COMMENT} characters: {too_long}"
        history = [line for line in comments(text) if HISTORY.search(line)]
        assert not history, f"{name}: history or figures belong in docs/haproxy.md: {history}"


def unexplained_runs(text: str) -> Iterator[tuple[str, list[str]]]:
    """(section, directives) for each run of directives in a frontend/backend with no comment among them."""
    section, run = "", []
    for line in [*text.splitlines(), ""]:
        stripped = line.strip()
        is_directive = line.startswith(" ") and stripped and not stripped.startswith(("#", "server"))
        if is_directive and section.startswith(("frontend ", "backend ")):
            run.append(stripped)
            continue
        if run:
            yield section, run
            run = []
        if stripped and not line.startswith((" ", "#", ".")):
            section = stripped


def test_each_group_of_directives_says_why(rendered: dict[str, str]) -> None:
    for name, text in rendered.items():
        lines = text.splitlines()
        for number, line in enumerate(lines):
            if line.startswith(("frontend ", "backend ")):
                assert lines[number - 1].startswith("#"), f"{name}: no comment introduces {line!r}"
        for section, run in unexplained_runs(text):
            assert len(run) <= MAX_UNEXPLAINED, f"{name}: {section}: {len(run)} directives without a why: {run}"


def test_gradio_calls_go_through_the_stream_relay_unless_it_is_off(rendered: dict[str, str]) -> None:
    relayed = "use_backend jobs if is_join relay_up"
    for name, text in rendered.items():
        if name.startswith("cluster.example.yaml"):
            assert (relayed in text) == (not name.endswith("stream relay off")), name
            assert ("acl relayed path" in text) == (not name.endswith("stream relay off")), name  # the worker queue's


def test_the_templates_ship_as_package_data() -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["balancer.haproxy"]
    package = REPO / "balancer" / "haproxy"
    templates = [path.relative_to(package).as_posix() for path in (package / "templates").rglob("*") if path.is_file()]
    assert templates
    assert [name for name in templates if not any(fnmatch(name, pattern) for pattern in patterns)] == []
