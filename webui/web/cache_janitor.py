"""Keeps Gradio's upload/cache folder under a byte budget and an age limit.

Gradio's own ``delete_cache`` only removes old files, on a slow timer, so a burst of uploads
(or large results) can still fill the disk. ``CacheJanitor`` sweeps the folder every
``interval`` seconds from a task on the event loop (the file walk runs in a thread): it
deletes files older than ``max_age``, then the oldest files until the rest fit in
``max_bytes``, then the directories it emptied. It never follows symbolic links (it neither
counts nor deletes them or what they point to) and refuses to sweep a folder that is clearly
not a cache of its own (``/``, the home folder, the system temporary folder).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from webui.tasks import cancel_and_wait

logger = logging.getLogger(__name__)


@dataclass
class CacheFile:
    """A regular file in the cache: its path, size in bytes and modification time."""

    path: Path
    size: int
    mtime: float


@dataclass
class Sweep:
    """What one sweep removed and what it left."""

    expired: list[CacheFile] = field(default_factory=list)
    """Files removed for being older than ``max_age``."""
    over_budget: list[CacheFile] = field(default_factory=list)
    """Files removed, oldest first, to bring the total under ``max_bytes``."""
    directories: int = 0
    """Directories removed because the sweep emptied them."""
    kept_bytes: int = 0
    """Bytes of the files left."""

    @property
    def removed(self) -> list[CacheFile]:
        return self.expired + self.over_budget


def unsafe_root(root: Path) -> str | None:
    """Why ``root`` must not be swept (a folder that holds more than a cache), or None."""
    resolved = root.resolve()
    folders = {"the filesystem root": Path(resolved.anchor), "the system temporary folder": Path(tempfile.gettempdir())}
    with suppress(RuntimeError):  # no home folder
        folders["the home folder"] = Path.home()
    return next((f"{root} is {name}" for name, folder in folders.items() if resolved == folder.resolve()), None)


def cache_files(root: Path) -> Iterator[CacheFile]:
    """Every regular file under ``root``; symbolic links (to files or folders) are skipped, not followed."""
    for folder, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(folder, name)
            try:
                info = path.lstat()
            except FileNotFoundError:  # removed meanwhile (Gradio's own cleanup, another web front)
                continue
            if stat.S_ISREG(info.st_mode):
                yield CacheFile(path, info.st_size, info.st_mtime)


class CacheJanitor:
    """Sweeps ``root`` every ``interval`` seconds: at most ``max_bytes`` bytes, no file older than ``max_age`` s."""

    def __init__(self, root: Path, max_bytes: int, max_age: float, interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = root.resolve()
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.interval = interval
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    def sweep(self) -> Sweep:
        """One sweep (blocking: file-system calls); logs what it removed at INFO."""
        result = Sweep()
        if not self.root.is_dir():
            return result
        deadline = self.clock() - self.max_age
        young: list[CacheFile] = []
        for entry in cache_files(self.root):
            (result.expired if entry.mtime < deadline else young).append(entry)
        young.sort(key=lambda entry: entry.mtime)
        total, cut = sum(entry.size for entry in young), 0
        while cut < len(young) and total > self.max_bytes:
            total -= young[cut].size
            cut += 1
        result.over_budget, result.kept_bytes = young[:cut], total
        result.expired = [entry for entry in result.expired if self._remove(entry.path)]
        result.over_budget = [entry for entry in result.over_budget if self._remove(entry.path)]
        result.directories = self._remove_emptied({entry.path.parent for entry in result.removed})
        if result.removed:
            logger.info(
                "cache janitor: removed %d file(s), %d bytes, from %s: %d older than %g s, %d over the %d-byte "
                "budget (oldest first), %d emptied folder(s); %d bytes left",
                len(result.removed), sum(entry.size for entry in result.removed), self.root, len(result.expired),
                self.max_age, len(result.over_budget), self.max_bytes, result.directories, result.kept_bytes,
            )
        return result

    def _remove(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.warning("cache janitor: cannot remove %s: %s", path, exc)
            return False
        logger.debug("cache janitor: removed %s", path)
        return True

    def _remove_emptied(self, folders: set[Path]) -> int:
        """Remove the folders in ``folders`` (and their parents up to the root) that are now empty."""
        removed = 0
        for folder in sorted(folders, key=lambda path: len(path.parts), reverse=True):
            while folder != self.root and self.root in folder.parents:
                try:
                    folder.rmdir()
                except OSError:  # not empty, or gone already
                    break
                removed += 1
                folder = folder.parent
        return removed

    async def run(self) -> None:
        """Sweep every ``interval`` seconds until cancelled; a failed sweep is logged and retried next time."""
        while True:
            try:
                await asyncio.to_thread(self.sweep)
            except Exception:
                logger.exception("cache janitor: sweep of %s failed", self.root)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Start sweeping in a task on the running event loop (unless ``root`` is unsafe to sweep)."""
        problem = unsafe_root(self.root)
        if problem:
            logger.error("cache janitor: not started: %s (set GRADIO_TEMP_DIR to a folder of its own)", problem)
            return
        logger.info("cache janitor: keeping %s under %d bytes and %g s, sweeping every %g s",
                    self.root, self.max_bytes, self.max_age, self.interval)
        self._task = asyncio.get_running_loop().create_task(self.run(), name="cache-janitor")

    async def stop(self) -> None:
        """Stop sweeping (a sweep already running in its thread finishes on its own)."""
        await cancel_and_wait(self._task)
        self._task = None
