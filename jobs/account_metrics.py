"""Usage per account in the jobs service's ``/metrics``: jobs by outcome, images, GPU seconds, quota refusals.

Counted by owner as they happen (no store access on the hot path) and labelled ``account`` with the account's name,
read from the store when scraped. Every account in the store has its series (0 until it is used), so ``rate()``
sees its first job. Jobs without an account (no API key: the page, a site login, anonymous API calls) are counted
under ``ANONYMOUS_LABEL``: the label's values are the store's accounts plus that one, whatever clients send.

* ``portrait_jobs_account_jobs_total{account,status}``: runs this service held that ended, by status,
* ``portrait_jobs_account_images_total{account}``: images of the jobs that succeeded,
* ``portrait_jobs_account_gpu_seconds_total{account}``: the workers' generation time of the runs that returned
  images (``timings.generate_ms``; a run canceled or failed mid-way is not counted),
* ``portrait_jobs_account_refusals_total{account,reason}``: submissions answered 429, ``reason`` ``daily`` or
  ``concurrency`` (``jobs.api.quotas``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from jobs.contract import SUCCEEDED, TERMINAL
from jobs.store.accounts import ACCOUNT_ID_PREFIX, list_accounts

logger = logging.getLogger(__name__)

ANONYMOUS_LABEL = "anonymous"
"""The ``account`` label of every job without an account (anonymous, the page's, a site login's)."""
REASONS = ("daily", "concurrency")
"""Why a submission was refused (``jobs.api.quotas``)."""


def owner_key(owner: str | None) -> str:
    """The account id a job's ``owner`` counts under; '' for every owner that is no account."""
    return owner if owner and owner.startswith(ACCOUNT_ID_PREFIX) else ""


class AccountUsage(Collector):
    """Per-account counters; ``engine`` (set by ``JobsMetrics.track_store``) names the accounts when scraped."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._lock = threading.Lock()
        self._jobs: Counter[tuple[str, str]] = Counter()
        self._images: Counter[str] = Counter()
        self._gpu_seconds: Counter[str] = Counter()
        self._refusals: Counter[tuple[str, str]] = Counter()

    def ended(self, owner: str | None, status: str, images: int = 0, gpu_seconds: float = 0.0) -> None:
        """Count a run of ``owner``'s job that ended in ``status`` (images only when it succeeded)."""
        key = owner_key(owner)
        with self._lock:
            self._jobs[key, status] += 1
            self._images[key] += images if status == SUCCEEDED else 0
            self._gpu_seconds[key] += gpu_seconds

    def refused(self, owner: str | None, reason: str) -> None:
        """Count a submission of ``owner`` refused for ``reason`` (one of ``REASONS``)."""
        with self._lock:
            self._refusals[owner_key(owner), reason] += 1

    def _names(self) -> dict[str, str]:
        """Account id -> name for every account in the store ('' -> ``ANONYMOUS_LABEL``); {} when it does not
        answer (the ids then stand for the names)."""
        names = {"": ANONYMOUS_LABEL}
        if self.engine is None:
            return names
        try:
            names.update((account.id, account.name) for account in list_accounts(self.engine))
        except Exception as error:  # any driver error: the store is down, /readyz says so
            logger.warning("metrics: the job store did not name the accounts: %s", error)
        return names

    def collect(self) -> Iterator[Metric]:
        names = self._names()
        with self._lock:
            counts = (Counter(self._jobs), Counter(self._images), Counter(self._gpu_seconds), Counter(self._refusals))
        jobs, images, gpu_seconds, refusals = counts
        for key in names:  # every known account has its series
            for status in TERMINAL:
                jobs[key, status] += 0
            for reason in REASONS:
                refusals[key, reason] += 0
            images[key] += 0
            gpu_seconds[key] += 0.0
        yield self._family("jobs", "Job runs this service held that ended, by account and status.", jobs, names,
                           ["status"])
        yield self._family("images", "Images of the succeeded jobs, by account.", images, names)
        yield self._family("gpu_seconds", "Workers' generation seconds of the runs that returned images, by account.",
                           gpu_seconds, names)
        yield self._family("refusals", "Submissions answered 429 (quota), by account and reason.", refusals, names,
                           ["reason"])

    @staticmethod
    def _family(name: str, documentation: str, counts: Counter, names: dict[str, str],
                extra: list[str] | None = None) -> CounterMetricFamily:
        """One counter family; keys are an owner key, or (owner key, extra label value)."""
        labelled: Counter[tuple[str, ...]] = Counter()
        for key, value in counts.items():
            owner, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
            labelled[(names.get(owner, owner), *rest)] += value  # an account named like the fold adds up with it
        family = CounterMetricFamily(f"portrait_jobs_account_{name}", documentation, labels=["account", *(extra or [])])
        for labels, value in sorted(labelled.items()):
            family.add_metric(list(labels), value)
        return family
