"""The operator's operations, one at a time: ``OperationRunner`` runs them on the sidecar's event loop and keeps
the report of the last one (``GET /operation``); ``OperationReport`` is that report; ``OperationError`` says why
one cannot start, naming each bad field of its request body (``parse_request``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)

OperationState = Literal["running", "done", "failed"]


class OperationError(Exception):
    """An operation cannot be started; the message says why."""


class OperationBusy(OperationError):
    """Another operation is running (one at a time)."""


BodyModel = TypeVar("BodyModel", bound=BaseModel)


def parse_request(data: object, model: type[BodyModel]) -> BodyModel:
    """Validate a request body as ``model``; ``OperationError`` naming each bad field."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise OperationError(problems) from None


@dataclass
class OperationReport:
    """Progress and outcome of one operation, as ``GET /operation`` shows it."""

    id: int
    kind: str
    state: OperationState = "running"
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    finished: str | None = None
    error: str | None = None
    nodes: dict[str, dict] = field(default_factory=dict)
    """Node -> what happened to it: ``restarted``, old and new pids, seconds drained."""
    events: list[dict] = field(default_factory=list)
    """Progress lines: ``{"t": seconds since start, "node": ..., "message": ...}``."""
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def log(self, node: str | None, message: str) -> None:
        """One progress line (also to the sidecar's log)."""
        self.events.append({"t": round(time.monotonic() - self._t0, 2), "node": node, "message": message})
        logger.info("%s #%d: %s%s", self.kind, self.id, f"{node}: " if node else "", message)

    def finish(self, error: str | None = None) -> None:
        """Mark it done, or failed with ``error``."""
        self.state = "failed" if error else "done"
        self.error = error
        self.finished = datetime.now(UTC).isoformat(timespec="seconds")
        if error:
            logger.error("%s #%d failed: %s", self.kind, self.id, error)
        else:
            logger.info("%s #%d done", self.kind, self.id)

    def document(self) -> dict:
        """JSON-ready view."""
        return {"id": self.id, "kind": self.kind, "state": self.state, "started": self.started,
                "finished": self.finished, "error": self.error, "nodes": self.nodes, "events": self.events}



class OperationRunner:
    """Runs one operation at a time in the background; keeps the report of the last one."""

    def __init__(self) -> None:
        self.last: OperationReport | None = None
        self._task: asyncio.Task | None = None
        self._ids = itertools.count(1)

    @property
    def busy(self) -> bool:
        """Whether an operation is running."""
        return self._task is not None and not self._task.done()

    def start(self, kind: str, run: Callable[[OperationReport], Awaitable[None]]) -> OperationReport:
        """Start ``run`` as operation ``kind``; ``OperationBusy`` while another one runs."""
        self.check_free()
        report = OperationReport(id=next(self._ids), kind=kind)
        self.last = report
        self._task = asyncio.create_task(self._guarded(run, report))
        return report

    def check_free(self) -> None:
        """``OperationBusy`` while an operation runs."""
        if self.busy:
            assert self.last is not None
            raise OperationBusy(f"{self.last.kind} #{self.last.id} is still running (one operation at a time); "
                                "see GET /operation")

    @staticmethod
    async def _guarded(run: Callable[[OperationReport], Awaitable[None]], report: OperationReport) -> None:
        try:
            await run(report)
        except asyncio.CancelledError:
            report.finish("cancelled: the sidecar is stopping")
            raise
        except Exception as exc:  # reported, never lost: the sidecar keeps running
            logger.exception("%s #%d crashed", report.kind, report.id)
            report.finish(f"internal error: {type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        """Cancel a running operation (the sidecar stops)."""
        if self.busy:
            assert self._task is not None
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
