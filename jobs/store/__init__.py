"""The durable job store: every job, its results and its events, in SQLite (one box) or PostgreSQL (many
balancer hosts), through one code path. Each function takes the ``Engine`` (``make_engine(url)``), after
``upgrade(url)`` brought the schema to the code's revision.
"""

from jobs.store.claims import claim_next, record_progress, renew
from jobs.store.deliveries import (
    LoggedAttempt,
    QueuedDelivery,
    claim_due,
    claim_one,
    job_deliveries,
    record_attempt,
)
from jobs.store.engine import default_url, make_engine
from jobs.store.events import events_after
from jobs.store.migrate import upgrade
from jobs.store.outcomes import cancel, fail, finish, mark_canceled, result_data, stored_results
from jobs.store.records import Event, Image, Job, Lease, Page, Settled, StoredResult
from jobs.store.retention import sweep_expired
from jobs.store.submissions import get, list_newest_first, new_job_id, queue_position, submit, submit_held

__all__ = [
    "LoggedAttempt", "QueuedDelivery", "claim_due", "claim_one", "job_deliveries", "record_attempt",
    "Event", "Image", "Job", "Lease", "Page", "Settled", "StoredResult", "cancel", "claim_next", "default_url",
    "events_after", "fail", "finish", "get", "list_newest_first", "make_engine", "mark_canceled", "new_job_id",
    "queue_position", "record_progress", "renew", "result_data", "stored_results", "submit", "submit_held",
    "sweep_expired", "upgrade",
]
