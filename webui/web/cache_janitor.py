"""Keeps Gradio's upload/cache folder under a disk budget (bytes and inodes) and an age limit.

Gradio's own ``delete_cache`` only removes old files, on a slow timer, so a burst of uploads
(or large results) can still fill the disk. ``CacheJanitor`` sweeps the folder every
``interval`` seconds from a task on the event loop (the file walk runs in a thread): it
deletes files older than ``max_age``, then the oldest files until the rest fit in both
``max_bytes`` and ``max_inodes``, then the directories it emptied.

Both budgets count what the disk really holds: a file's or directory's allocated blocks
(``st_blocks * 512``: a 16-byte upload takes a 4 KiB block, and Gradio puts each upload in a
directory of its own), and one inode per file and per directory. A thousand tiny files are
thus 8 MB and 2000 inodes, not 16 kB. It never follows symbolic links (it neither counts nor
deletes them or what they point to) and refuses to sweep a folder that is clearly not a cache
of its own (``/``, the home folder, the system temporary folder).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from webui.tasks import cancel_and_wait

logger = logging.getLogger(__name__)


BLOCK_UNIT = 512
"""Bytes of one ``st_blocks`` unit (POSIX)."""


@dataclass
class CacheFile:
    """A regular file in the cache: its path, bytes on disk (allocated blocks) and modification time."""

    path: Path
    size: int
    mtime: float


@dataclass
class Folder:
    """A directory under the cache root: its bytes on disk and how many entries it holds (of any kind)."""

    size: int
    entries: int = 0


@dataclass
class CacheScan:
    """Everything under the root: its files, its folders (not the root itself) and their disk use."""

    files: list[CacheFile] = field(default_factory=list)
    folders: dict[Path, Folder] = field(default_factory=dict)

    @property
    def disk_bytes(self) -> int:
        return sum(entry.size for entry in self.files) + sum(folder.size for folder in self.folders.values())

    @property
    def inodes(self) -> int:
        return len(self.files) + len(self.folders)

    def freed_by(self, entry: CacheFile) -> tuple[int, int]:
        """Bytes and inodes that removing ``entry`` frees: itself, and the folders it leaves empty (counted down)."""
        size, inodes, folder = entry.size, 1, entry.path.parent
        while (holder := self.folders.get(folder)) is not None:
            holder.entries -= 1
            if holder.entries:
                break
            size, inodes, folder = size + holder.size, inodes + 1, folder.parent
        return size, inodes


@dataclass
class Sweep:
    """What one sweep removed and what it left."""

    expired: list[CacheFile] = field(default_factory=list)
    """Files removed for being older than ``max_age``."""
    over_budget: list[CacheFile] = field(default_factory=list)
    """Files removed, oldest first, to bring the rest within ``max_bytes`` and ``max_inodes``."""
    directories: int = 0
    """Directories removed because the sweep emptied them."""
    kept_bytes: int = 0
    """Bytes on disk of the files and folders left."""
    kept_inodes: int = 0
    """Files and folders left."""

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


def disk_size(info: os.stat_result) -> int:
    """Bytes a file or directory takes on disk: its allocated blocks, not its apparent size."""
    return info.st_blocks * BLOCK_UNIT


def scan_cache(root: Path) -> CacheScan:
    """Every regular file and folder under ``root``; symbolic links (to files or folders) are skipped, not
    followed; something removed meanwhile (Gradio's own cleanup, another web front) is left out."""
    scan = CacheScan()
    for top, dirs, names in os.walk(root, followlinks=False):
        folder = Path(top)
        if (holder := scan.folders.get(folder)) is not None:
            holder.entries = len(dirs) + len(names)  # links and other kinds too: they keep it from emptying
        for name in dirs:
            path = folder / name
            with suppress(FileNotFoundError):
                info = path.lstat()
                if stat.S_ISDIR(info.st_mode):  # os.walk lists a link to a folder among the folders
                    scan.folders[path] = Folder(disk_size(info))
        for name in names:
            path = folder / name
            with suppress(FileNotFoundError):
                info = path.lstat()
                if stat.S_ISREG(info.st_mode):
                    scan.files.append(CacheFile(path, disk_size(info), info.st_mtime))
    return scan


class CacheJanitor:
    """Sweeps ``root`` every ``interval`` seconds: at most ``max_bytes`` bytes on disk and ``max_inodes`` files
    and folders, no file older than ``max_age`` s."""

    def __init__(self, root: Path, max_bytes: int, max_age: float, interval: float,
                 clock: Callable[[], float] = time.time, max_inodes: int | None = None) -> None:
        self.root = root.resolve()
        self.max_bytes = max_bytes
        self.max_inodes = max_inodes if max_inodes is not None else sys.maxsize
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
        scan = scan_cache(self.root)
        size, inodes = scan.disk_bytes, scan.inodes
        young: list[CacheFile] = []
        for entry in scan.files:
            (result.expired if entry.mtime < deadline else young).append(entry)
        young.sort(key=lambda entry: entry.mtime)
        for entry in result.expired:
            freed_size, freed_inodes = scan.freed_by(entry)
            size, inodes = size - freed_size, inodes - freed_inodes
        cut = 0
        while cut < len(young) and (size > self.max_bytes or inodes > self.max_inodes):
            freed_size, freed_inodes = scan.freed_by(young[cut])
            size, inodes, cut = size - freed_size, inodes - freed_inodes, cut + 1
        result.over_budget, result.kept_bytes, result.kept_inodes = young[:cut], size, inodes
        result.expired = [entry for entry in result.expired if self._remove(entry.path)]
        result.over_budget = [entry for entry in result.over_budget if self._remove(entry.path)]
        result.directories = self._remove_emptied({entry.path.parent for entry in result.removed})
        if result.removed:
            logger.info(
                "cache janitor: removed %d file(s), %d bytes on disk, from %s: %d older than %g s, %d over the "
                "budget of %d bytes and %d inodes (oldest first), %d emptied folder(s); %d bytes and %d inodes left",
                len(result.removed), sum(entry.size for entry in result.removed), self.root, len(result.expired),
                self.max_age, len(result.over_budget), self.max_bytes, self.max_inodes, result.directories,
                result.kept_bytes, result.kept_inodes,
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
        logger.info("cache janitor: keeping %s under %d bytes on disk, %d inodes and %g s, sweeping every %g s",
                    self.root, self.max_bytes, self.max_inodes, self.max_age, self.interval)
        self._task = asyncio.get_running_loop().create_task(self.run(), name="cache-janitor")

    async def stop(self) -> None:
        """Stop sweeping (a sweep already running in its thread finishes on its own)."""
        await cancel_and_wait(self._task)
        self._task = None
