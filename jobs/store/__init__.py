"""The durable job store: every job, its results and its events, in SQLite (one box) or PostgreSQL (many
balancer hosts), through one code path. Each function takes the ``Engine`` (``make_engine(url)``), after
``upgrade(url)`` brought the schema to the code's revision.
"""

from jobs.store.account_retention import set_retention, strip_expired_inputs
from jobs.store.accounts import (
    Account,
    Member,
    add_member,
    create_account,
    get_account,
    list_accounts,
    members,
    remove_member,
    set_limits,
    set_weight,
)
from jobs.store.api_keys import ApiKey, create_key, find_key, key_by_prefix, key_hash, list_keys, revoke_key, touch_key
from jobs.store.claims import claim_next, record_progress, renew
from jobs.store.deletion import delete_job
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
from jobs.store.queue import QueueEstimate, queue_estimate
from jobs.store.records import Event, Image, Job, JobFilter, Lease, Page, Settled, StoredResult
from jobs.store.retention import sweep_expired
from jobs.store.submissions import get, ids_by_key, list_newest_first, new_job_id, submit, submit_held
from jobs.store.thumbnails import Thumbnail, thumbnail

__all__ = [
    "Account", "Member", "add_member", "create_account", "get_account", "list_accounts", "members", "remove_member",
    "set_limits", "set_retention", "set_weight", "strip_expired_inputs",
    "ApiKey", "create_key", "find_key", "key_by_prefix", "key_hash", "list_keys", "revoke_key", "touch_key",
    "LoggedAttempt", "QueuedDelivery", "claim_due", "claim_one", "job_deliveries", "record_attempt",
    "Event", "Image", "Job", "JobFilter", "Lease", "Page", "Settled", "StoredResult", "Thumbnail", "cancel",
    "claim_next", "default_url", "delete_job", "events_after", "fail", "finish", "get", "ids_by_key",
    "list_newest_first", "make_engine", "mark_canceled", "new_job_id", "QueueEstimate", "queue_estimate",
    "record_progress", "renew", "result_data", "stored_results", "submit", "submit_held", "sweep_expired",
    "thumbnail", "upgrade",
]
