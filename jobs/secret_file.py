"""A secret kept in a file: the operator's, or one generated once (mode 0600) and reused on every start.

The webhook signing secret and the share-link key are both such files. Every balancer host must hold the same
file (any host may sign what another checks); the secret itself is never logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


def read_secret_file(path: Path, what: str, new: Callable[[], str], check: Callable[[str], object],
                     create: bool = False) -> str:
    """The secret in the file ``path`` (``what`` names it in errors), checked by ``check`` (raises ValueError).

    With ``create``, a missing file is first made with ``new()`` (mode 0600, atomically: services starting together
    all read the one that was written first)."""
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(new() + "\n")
        try:
            os.link(draft, path)
            logger.info("%s generated in %s (mode 0600): give the same file to every balancer host", what, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ValueError(f"the {what} file {path} cannot be read ({error.strerror})") from None
    try:
        check(secret)
    except ValueError as error:
        raise ValueError(f"the {what} file {path} does not hold a secret: {error}") from None
    return secret
