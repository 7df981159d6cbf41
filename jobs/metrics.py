"""The jobs service's Prometheus metrics (``GET /metrics``), in a registry of their own.

Counted by this process (each jobs service counts the runs it held; sum them over balancers):

* ``portrait_jobs_finished_total{status}``: runs that ended succeeded, failed or canceled,
* ``portrait_jobs_queue_wait_seconds``: from a job's acceptance to its first denoising step on a worker,
* the same per account, with images, GPU seconds and quota refusals (``jobs.account_metrics``).

Read from the store when scraped (the same for every jobs service sharing it; take ``max`` over balancers):

* ``portrait_jobs_webhook_pending_deliveries`` and ``portrait_jobs_webhook_oldest_due_age_seconds`` (how
  long the most overdue pending delivery has been due: the outbox's lag, 0 when nothing is due),
* ``portrait_jobs_store_filesystem_avail_bytes`` / ``_size_bytes``: the filesystem holding an SQLite store
  (no series for PostgreSQL: watch its host with node_exporter).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from jobs.account_metrics import AccountUsage
from jobs.contract import TERMINAL
from jobs.store.engine import read
from jobs.store.outbox import PENDING
from jobs.store.records import utc_now
from jobs.store.schema import webhook_deliveries

logger = logging.getLogger(__name__)

QUEUE_WAIT_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900)
"""Seconds: generations take several seconds, so waits are counted in seconds to minutes."""


def sqlite_path(engine: Engine) -> Path | None:
    """The file of an SQLite store, None for any other database (or an in-memory one)."""
    database = engine.url.database
    return Path(database) if engine.url.get_backend_name() == "sqlite" and database else None


class StoreCollector(Collector):
    """Gauges read from the store at scrape time; a store that does not answer leaves them out (and is logged)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        try:
            pending, oldest_due = self._webhook_backlog(utc_now())
        except Exception as error:  # any driver error: the store is down, /readyz says so
            logger.warning("metrics: the job store did not answer: %s", error)
        else:
            yield GaugeMetricFamily("portrait_jobs_webhook_pending_deliveries",
                                    "Webhook deliveries not yet delivered or given up.", value=pending)
            yield GaugeMetricFamily("portrait_jobs_webhook_oldest_due_age_seconds", "Seconds the most overdue "
                                    "pending webhook delivery has been due (0: none is due).", value=oldest_due)
        yield from self._filesystem()

    def _webhook_backlog(self, now: datetime) -> tuple[int, float]:
        table = webhook_deliveries.c
        query = select(func.count()).where(table.status == PENDING)
        due = select(func.min(table.next_attempt_at)).where(table.status == PENDING, table.next_attempt_at <= now)
        with read(self.engine) as connection:
            pending = connection.execute(query).one()[0]
            oldest = connection.execute(due).scalar()
        return pending, max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0

    def _filesystem(self) -> Iterator[Metric]:
        path = sqlite_path(self.engine)
        if path is None:
            return
        usage = shutil.disk_usage(path.parent)
        yield GaugeMetricFamily("portrait_jobs_store_filesystem_avail_bytes",
                                "Bytes free to the job store on its filesystem (SQLite).", value=usage.free)
        yield GaugeMetricFamily("portrait_jobs_store_filesystem_size_bytes",
                                "Size of the job store's filesystem (SQLite).", value=usage.total)


ADOPTION_OUTCOMES = ("adopted", "lost")
"""What became of a relayed API call whose web front died (``jobs.relay``)."""


class JobsMetrics:
    """The jobs service's metrics; ``track_store`` adds the gauges read from the store."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.finished = Counter("portrait_jobs_finished", "Job runs this service held that ended, by status.",
                                ["status"], registry=self.registry)
        for status in TERMINAL:
            self.finished.labels(status)
        self.queue_wait = Histogram("portrait_jobs_queue_wait_seconds", "Seconds from a job's acceptance to its "
                                    "first denoising step on a worker.", buckets=QUEUE_WAIT_BUCKETS,
                                    registry=self.registry)
        self.adoptions = Counter("portrait_jobs_relay_adoptions", "API calls whose web front died mid-call, by "
                                 "outcome: adopted (another web front took the call over) or lost.", ["outcome"],
                                 registry=self.registry)
        for outcome in ADOPTION_OUTCOMES:
            self.adoptions.labels(outcome)
        self.accounts = AccountUsage()
        self.registry.register(self.accounts)

    def track_store(self, engine: Engine) -> None:
        """Export the store's webhook backlog and filesystem, read at scrape time; name the accounts from it."""
        self.registry.register(StoreCollector(engine))
        self.accounts.engine = engine

    def ended(self, status: str, owner: str | None = None, images: int = 0, gpu_seconds: float = 0.0) -> None:
        """Count a run of ``owner``'s job that ended in ``status`` with ``images`` made in ``gpu_seconds`` (a lost
        lease is no ending: the next holder counts the job)."""
        if status in TERMINAL:
            self.finished.labels(status).inc()
            self.accounts.ended(owner, status, images, gpu_seconds)

    def render(self) -> bytes:
        """The text exposition format (blocking: it reads the store)."""
        return generate_latest(self.registry)
