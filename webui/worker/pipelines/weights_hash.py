"""SHA-256 of a model's weights and its LoRA's, computed once per load (never per image) and kept across restarts.

A model directory's hash is the SHA-256 of its weight files' ``<relative path> <sha256>`` lines, sorted; each
file's hash is remembered (in memory and in ``<cache_dir>/weight-hashes.json``) under its path, size and
modification time, so a worker restarted on the same files reads them once, not on every start. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
"""Files that hold weights (configs and tokenizers are not hashed: they are small and in the recipe's words)."""
CACHE_FILE = "weight-hashes.json"
CHUNK = 8 * 1024 * 1024


class WeightHashes:
    """Files' SHA-256, remembered by (path, size, mtime); ``cache_dir`` None keeps them in memory only."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.path = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
        self._known: dict[str, str] = self._read()
        self._lock = threading.Lock()

    def file(self, path: Path) -> str:
        """The SHA-256 of one file (hex)."""
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        with self._lock:
            if key in self._known:
                return self._known[key]
        started = time.perf_counter()
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
        value = digest.hexdigest()
        logger.info("hashed %s (%d MB) in %.1fs", path, stat.st_size // 2**20, time.perf_counter() - started)
        with self._lock:
            self._known[key] = value
            self._write()
        return value

    def directory(self, directory: Path) -> str | None:
        """One SHA-256 for every weight file under ``directory`` (None when it holds none)."""
        files = sorted(path for path in Path(directory).rglob("*")
                       if path.suffix in WEIGHT_SUFFIXES and path.is_file())
        if not files:
            return None
        lines = "".join(f"{path.relative_to(directory).as_posix()} {self.file(path)}\n" for path in files)
        return hashlib.sha256(lines.encode()).hexdigest()

    def _read(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            known = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(key): str(value) for key, value in known.items()} if isinstance(known, dict) else {}

    def _write(self) -> None:
        """Save what is known (atomically); a read-only cache only costs the next start a re-read."""
        if self.path is None:
            return
        staging = self.path.with_name(f".{CACHE_FILE}.{os.getpid()}")
        try:
            staging.write_text(json.dumps(self._known, indent=0, sort_keys=True))
            os.replace(staging, self.path)
        except OSError as exc:
            logger.warning("cannot save weight hashes in %s: %s", self.path, exc)
