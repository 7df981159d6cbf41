"""Size-bounded node logs: the sidecar rotates the log files its children write.

Each child (web front, worker, HAProxy, keepalived) writes its stdout and stderr straight into
a log file opened for appending (``balancer.system.run_dir.open_private_log``), so that a child never
waits on the sidecar to log. ``LogRotation`` looks at those files every ``interval`` seconds
(in a thread) and rotates any that has passed ``max_bytes``, the way logrotate's
``copytruncate`` does: ``NAME.log.N-1`` becomes ``NAME.log.N`` (the last one is dropped, so at
most ``keep`` old files stay), the file is copied to ``NAME.log.1`` and then emptied. The
child's next write lands at the start of the emptied file, since it appends. A log thus holds
at most about ``max_bytes x (keep + 1)`` plus what is written in one ``interval``; a line
written in the instant between the copy and the emptying is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

COPY_CHUNK = 1024 * 1024


def rotated(path: Path, index: int) -> Path:
    """The ``index``-th older copy of ``path``: ``NAME.log.1`` is the newest."""
    return path.with_name(f"{path.name}.{index}")


class LogRotation:
    """Rotates each of ``paths()`` once it is larger than ``max_bytes``, keeping ``keep`` older copies."""

    def __init__(self, paths: Callable[[], Iterable[Path]], max_bytes: int, keep: int, interval: float) -> None:
        self.paths = paths
        self.max_bytes = max_bytes
        self.keep = keep
        self.interval = interval

    @classmethod
    def of_run_dir(cls, run_dir: Path, max_bytes: int, keep: int, interval: float) -> LogRotation:
        """The logs the children write into the run directory: ``logs/*.log`` and ``haproxy.log``."""
        return cls(lambda: [*(run_dir / "logs").glob("*.log"), run_dir / "haproxy.log"], max_bytes, keep, interval)

    def sweep(self) -> list[Path]:
        """Rotate every log over its size (blocking: file-system calls); the logs rotated."""
        done = []
        for path in self.paths():
            try:
                if path.lstat().st_size > self.max_bytes and self.rotate(path):
                    done.append(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("cannot rotate %s: %s", path, exc)
        return done

    def rotate(self, path: Path) -> bool:
        """Shift the older copies, copy ``path`` to ``NAME.1`` and empty it; False if it is not a plain file."""
        source = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(source).st_mode):
                return False
            rotated(path, self.keep).unlink(missing_ok=True)
            for index in range(self.keep - 1, 0, -1):
                if rotated(path, index).exists():
                    os.replace(rotated(path, index), rotated(path, index + 1))
            target = os.open(rotated(path, 1), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600)
            with os.fdopen(source, "rb", closefd=False) as reader, os.fdopen(target, "wb") as writer:
                shutil.copyfileobj(reader, writer, COPY_CHUNK)
                os.ftruncate(source, 0)
        finally:
            os.close(source)
        logger.info("rotated %s (over %d bytes; %d older copies kept)", path, self.max_bytes, self.keep)
        return True

    async def run(self) -> None:
        """Sweep every ``interval`` seconds until cancelled; a failed sweep is logged and retried next time."""
        while True:
            try:
                await asyncio.to_thread(self.sweep)
            except Exception:
                logger.exception("log rotation failed")
            await asyncio.sleep(self.interval)
