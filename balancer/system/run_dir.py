"""The run directory and the files in it: private to this user, never written through a link.

The run directory (``haproxy.cfg`` with the stats password, the admin socket, logs, the web
fronts' Gradio uploads and images) has a stable default name under the system's temp dir, so
another user could create it first. ``prepare_run_dir`` therefore creates it (and ``logs/``,
``gradio/``) with mode 0700, or accepts an existing one only if it is a real directory (not a
symlink), owned by this user and closed to group and others. An existing directory that is
open to others is *refused*, not tightened: others may already have planted files or links in
it, which a chmod would not undo.

Files are created without following a symlink at their final component: ``write_private_file``
writes a new 0600 file next to the target and renames it over the target (a symlink there is
replaced, its target untouched); ``open_private_log`` appends with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO

from balancer.config.basics import ClusterConfigError

SUBDIRS = ("logs", "gradio")
"""Subdirectories of the run directory: node logs, and each web front's Gradio temp dir."""

_ELSEWHERE = "or choose another directory with --run-dir (run_dir in a cluster file)"


def prepare_run_dir(path: Path) -> Path:
    """Create or check ``path`` and its subdirectories (all 0700, ours); ``ClusterConfigError`` if unsafe."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClusterConfigError(f"cannot create run directory {path}: {exc.strerror}; {_ELSEWHERE}.") from None
    private_dir(path)
    for name in SUBDIRS:
        private_dir(path / name)
    return path


def private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700 if missing, then check it is ours and private (see the module doc)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ClusterConfigError(f"cannot create run directory {path}: {exc.strerror}; {_ELSEWHERE}.") from None
    problem = _unsafe_because(os.lstat(path))
    if problem:
        raise ClusterConfigError(f"unsafe run directory {path}: it {problem}.")
    return path


def _unsafe_because(info: os.stat_result) -> str | None:
    """Why a directory with this ``lstat`` is not safe to use, or None."""
    if stat.S_ISLNK(info.st_mode):
        return f"is a symbolic link; remove it {_ELSEWHERE}"
    if not stat.S_ISDIR(info.st_mode):
        return f"is not a directory; remove it {_ELSEWHERE}"
    if info.st_uid != os.getuid():
        return f"is owned by uid {info.st_uid}, not by this user (uid {os.getuid()}); {_ELSEWHERE}"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return f"has mode {mode:04o}, open to other users; check its contents and 'chmod 700' it, {_ELSEWHERE}"
    return None


def write_private_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (mode 0600) atomically, replacing (never following) a symlink there."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)  # exactly 0600 whatever the umask
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def open_private_log(path: Path) -> BinaryIO:
    """Open a log file for appending, mode 0600; ``OSError`` (ELOOP) if ``path`` is a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a log left by an older version may be wider
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")
