"""Another git revision's tree, for benchmarks that compare this tree with it (``--baseline REV``)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness.processes import REPO


@contextmanager
def worktree(revision: str, prog: str) -> Iterator[Path]:
    """A temporary checkout of ``revision`` (``git worktree``), removed afterwards; ``prog`` names the
    benchmark in the error when there is no such revision."""
    with tempfile.TemporaryDirectory(prefix="bench-revision-") as tmp:
        path = Path(tmp) / "tree"
        added = subprocess.run(["git", "worktree", "add", "--detach", str(path), revision], cwd=REPO,
                               capture_output=True, text=True)
        if added.returncode != 0:
            raise SystemExit(f"{prog}: no checkout of {revision!r}: {added.stderr.strip()}")
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False)
