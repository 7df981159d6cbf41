"""The demo model for a test session, copied from a build kept across sessions.

Building the demo model costs seconds of CPU in every test session. A kept build is reused only when
nothing that makes it can have changed: it is kept under a key that hashes the builder's source files
and the versions of Python and of the libraries it calls. The build is deterministic, and
``tests/test_models.py`` builds it afresh and compares every byte with the session's copy, so a stale
kept build cannot go unnoticed. Each session gets its own copy (a test may alter its files).
``PORTRAIT_TEST_BUILDS_DIR`` names the place of the kept builds (default ``~/.cache/portrait-ha/test-builds``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path

from webui.worker.pipelines.demo import demo_dir, ensure_built

BUILDS_DIR_ENV = "PORTRAIT_TEST_BUILDS_DIR"
PIPELINES = Path(__file__).resolve().parent.parent / "webui" / "worker" / "pipelines"
SOURCES = ("demo.py", "demo_build.py", "demo_tokenizer.py", "lora_layouts.py")
"""The builder's own code (``webui.worker.pipelines.demo_build`` and what it imports from the project)."""
LIBRARIES = ("torch", "diffusers", "transformers", "peft", "safetensors", "tokenizers", "numpy")
"""The libraries whose versions the build depends on."""


def build_key() -> str:
    """A hash of everything the demo build depends on."""
    digest = hashlib.sha256(platform.python_version().encode())
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (PIPELINES / name).read_bytes())
    for library in LIBRARIES:
        digest.update(f"{library}=={metadata.version(library)}\0".encode())
    return digest.hexdigest()[:24]


def builds_dir() -> Path:
    """Where kept builds live."""
    default = Path.home() / ".cache" / "portrait-ha" / "test-builds"
    return Path(os.environ.get(BUILDS_DIR_ENV) or default)


def session_demo_model(cache_dir: Path) -> Path:
    """``<cache_dir>/demo-model``: a copy of the kept build for this key, built first when there is none.

    Both steps are ``ensure_built``'s (staged in a sibling directory, then renamed into place), so sessions
    running side by side never see a half-written model.
    """
    from webui.worker.pipelines.loader import ensure_demo_model

    kept = ensure_demo_model(builds_dir() / build_key())
    return ensure_built(demo_dir(cache_dir), lambda staging: shutil.copytree(kept, staging, dirs_exist_ok=True))
