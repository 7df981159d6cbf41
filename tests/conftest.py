"""pytest fixtures shared by every test module."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bench.harness import shared_ssl
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.postgres import PostgresServer
from bench.harness.processes import TEARDOWN_GRACE, Processes
from tests.demo_cache import session_demo_model
from tests.shared_cluster import MODULES as SHARED_MODULES
from tests.shared_cluster import shared_options

shared_ssl.install()  # httpx.get made a TLS context per call: most of a test process's CPU
# One torch thread in the test processes and in every process they start (before any test module imports torch;
# a cluster's workers get --threads 1 anyway): beside the other test processes on 2 cores, torch's default of one
# thread per core spent most of its time in OpenMP waits (tests/test_pipeline.py alone beside a busy core: 99 s
# with two threads, 18 s with one).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def portrait_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir for this test session; every server the tests start inherits it."""
    path = Path(os.environ.get("PORTRAIT_TEST_CACHE_DIR") or tmp_path_factory.mktemp("portrait-cache"))
    os.environ["PORTRAIT_CACHE_DIR"] = str(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return path


@pytest.fixture(scope="session", autouse=True)
def temporary_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This session's temporary files, under pytest's own directory (which it prunes): ``gradio_client`` makes
    a folder in the system's temporary directory for each file it downloads, and leaves it there."""
    path = tmp_path_factory.mktemp("tmp")
    before = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(path), str(path)
    yield path
    tempfile.tempdir = before[0]
    if before[1] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before[1]


@pytest.fixture(autouse=True)
def one_tab_a_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test's browser tabs are closed after it, passed or failed (``tests.browser.close_tabs`` says why)."""
    yield
    if "browser" in request.fixturenames:
        from tests.browser import close_tabs  # Playwright only where a test drives a browser

        close_tabs(request.getfixturevalue("browser"))


@pytest.fixture(scope="session")
def demo_model_dir(portrait_cache_dir: Path) -> Path:
    """The offline demo model, in place once per test session (before servers race to build it): a copy of
    a build kept across sessions for the same builder code and libraries (``tests/demo_cache.py``)."""
    return session_demo_model(portrait_cache_dir)


SHARED_GROUP = pytest.StashKey[Processes]()
LAST_SHARED_USER = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def shared_cluster(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedCluster]:
    """The cluster read-only tests share (``tests/shared_cluster.py``): started when a test first asks for it,
    stopped after the last test that uses it (``pytest_runtest_teardown``), or at the session's end."""
    with Processes("shared") as group, LaunchedCluster(shared_options(), name="shared", processes=group,
                                                       run_dir=tmp_path_factory.mktemp("shared")) as cluster:
        cluster.wait_all_ready(timeout=120)
        request.session.stash[SHARED_GROUP] = group
        yield cluster


MODULE_SECONDS = Path(__file__).with_name("module_seconds.json")
"""Seconds each module took in a whole run (``scripts/module_seconds.py`` writes it)."""
SHARED_SCOPE = "shared-cluster"
"""The unit of every module that uses the shared cluster (``scope_of``)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules longest first, each module's tests in their own order: the test processes take modules in this
    order (``--no-loadscope-reorder``), so the last to start are short ones and both end close together. A module
    not in the table counts as long (it is new: its time is unknown). The shared cluster's users are one unit."""
    seconds: dict[str, float] = json.loads(MODULE_SECONDS.read_text()) if MODULE_SECONDS.exists() else {}
    unknown = max(seconds.values(), default=0.0)
    seconds[SHARED_SCOPE] = sum(seconds.get(module, unknown) for module in SHARED_MODULES)
    unlisted = {module for item in items if "shared_cluster" in getattr(item, "fixturenames", ())
                and (module := item.nodeid.partition("::")[0]) not in SHARED_MODULES}
    if unlisted:
        raise pytest.UsageError(f"{', '.join(sorted(unlisted))} use the shared cluster: add them to "
                                "tests/shared_cluster.py's MODULES")
    items.sort(key=lambda item: -seconds.get(scope_of(item.nodeid), unknown))



def scope_of(nodeid: str) -> str:
    """What one test process runs as one unit: a module, or every user of the shared cluster."""
    module = nodeid.partition("::")[0]
    return SHARED_SCOPE if module in SHARED_MODULES else module


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """pytest-xdist's ``--dist loadfile``, with the shared cluster's users as one unit (one process starts it);
    other ``--dist`` modes as they are."""
    from xdist.scheduler import LoadFileScheduling

    if config.getoption("dist") != "loadfile":
        return None

    class ModuleScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return ModuleScheduling(config, log)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note the last test, in run order, that uses the shared cluster (a pytest-xdist worker runs them all, in
    collection order: ``pytest_xdist_make_scheduler``)."""
    users = [item.nodeid for item in session.items if "shared_cluster" in getattr(item, "fixturenames", ())]
    if users:
        session.stash[LAST_SHARED_USER] = users[-1]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the shared cluster's last user, stop it: no idle cluster beside the rest of the session."""
    if item.nodeid == item.session.stash.get(LAST_SHARED_USER, None):
        group = item.session.stash.get(SHARED_GROUP, None)
        if group is not None:
            group.stop_all(TEARDOWN_GRACE)


@pytest.fixture
def processes():
    """Processes started by one test; all stopped when it ends."""
    with Processes("test") as group:
        yield group


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network here: make huggingface_hub fail at once instead of retrying."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 server for this test session (``bench.harness.postgres``): each test that needs a
    store gets a database of its own on it. Fails with what to install when the binaries are missing."""
    try:
        server = PostgresServer()
    except RuntimeError as missing:
        pytest.fail(str(missing), pytrace=False)
    with server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty job store, migrated to the newest revision: an SQLite file, or a fresh database on
    the session's PostgreSQL server (run such tests under the cluster lock: they start a server)."""
    from jobs.store.migrate import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
        upgrade(url)
        yield url
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    upgrade(url)
    yield url
    server.drop_database(url)


@pytest.fixture
def job_store(store_url: str) -> Iterator[Engine]:
    """An engine on ``store_url``'s job store, disposed of at the end."""
    from jobs.store.engine import make_engine

    engine = make_engine(store_url)
    yield engine
    engine.dispose()
