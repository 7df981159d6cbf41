"""uvicorn serving inside an event loop whose owner handles SIGINT/SIGTERM itself: the sidecar's HTTP API in the
sidecar's loop, the jobs service's second listener beside its main one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the signals to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
