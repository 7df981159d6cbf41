"""Test-only helpers: pixel-bomb images, peak memory (what the benchmarks use too is in ``bench.harness``)."""

from __future__ import annotations

from pathlib import Path

import psutil
from PIL import Image


def blank_png(path: Path, width: int, height: int) -> Path:
    """Write a black greyscale PNG of ``width`` x ``height``: a pixel bomb of a few hundred KB at most."""
    Image.new("L", (width, height)).save(path, optimize=True)
    return path


def reset_peak_rss(pid: int | str = "self") -> int:
    """Reset a process's peak resident memory (Linux ``clear_refs``); return its resident bytes now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return psutil.Process(None if pid == "self" else int(pid)).memory_info().rss


def peak_rss(pid: int | str = "self") -> int:
    """A process's peak resident memory in bytes since it started or since ``reset_peak_rss``."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) * 1024
