"""The offline demo model's place in the cache: where it lives, whether it is complete, building it safely.

The model itself (a real ``ZImagePipeline`` with tiny, deterministic weights, and its LoRA) is
built by ``webui.worker.pipelines.demo_build``; this module is light (no torch), so a worker can
tell a complete build from a missing one before importing anything heavy
(``webui.worker.pipelines.loader.ensure_demo_model``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_DIR_NAME = "demo-model"
LORA_SUBDIR = "lora"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
LORA_LAYOUTS_SUBDIR = "lora-layouts"
"""The demo LoRA in other key layouts: ``<layout>.safetensors`` for each of ``lora_layouts.LAYOUTS``."""
BUILD_MARKER = "demo_build.json"
BUILD_VERSION = 3
"""Bump when the architecture or the weights change, so that old caches get rebuilt."""
SEED = 20240601


def demo_dir(cache_dir: Path) -> Path:
    """Where the demo model lives in ``cache_dir``."""
    return Path(cache_dir) / DEMO_DIR_NAME


def is_complete(model_dir: Path) -> bool:
    """True when ``model_dir`` holds a finished demo build of the current version."""
    marker = model_dir / BUILD_MARKER
    try:
        return json.loads(marker.read_text()).get("version") == BUILD_VERSION
    except (OSError, ValueError):
        return False


def ensure_built(target: Path, write: Callable[[Path], None]) -> Path:
    """Return ``target``, building the demo model into it first if it is missing or incomplete.

    ``write(directory)`` builds it (``demo_build.write_demo_model``), in a temporary sibling directory
    that is renamed into place, so concurrent callers never see (or produce) a half-written model:
    the first rename wins and the others reuse its result.
    """
    target = Path(target).absolute()
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the model is meant to be shared
    try:
        logger.info("building the offline demo model in %s", target)
        write(staging)
        if target.exists() and not is_complete(target):
            _remove_stale(target)
        try:
            os.rename(staging, target)
        except OSError:
            if not is_complete(target):  # neither ours nor a complete build is in place
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _remove_stale(target: Path) -> None:
    """Move an incomplete old build out of the way (atomically), then delete it."""
    graveyard = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
    try:
        os.rename(target, graveyard / target.name)
    except FileNotFoundError:
        pass  # another builder moved it first
    shutil.rmtree(graveyard, ignore_errors=True)
