"""pytest fixtures shared by every test module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.harness.processes import Processes


@pytest.fixture(scope="session", autouse=True)
def portrait_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir for this test session; every server the tests start inherits it."""
    path = Path(os.environ.get("PORTRAIT_TEST_CACHE_DIR") or tmp_path_factory.mktemp("portrait-cache"))
    os.environ["PORTRAIT_CACHE_DIR"] = str(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return path


@pytest.fixture(scope="session")
def demo_model_dir(portrait_cache_dir: Path) -> Path:
    """The offline demo model, built once per test session (before servers race to build it)."""
    from assets.build_demo_model import ensure_demo_model

    return ensure_demo_model(portrait_cache_dir)


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
