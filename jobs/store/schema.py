"""The job store's tables (SQLAlchemy Core, one ``MetaData``): jobs, their results, thumbnails, events and tombstones;
webhook deliveries (the outbox) and their attempts (the delivery log); accounts, their members and API keys.

Portable between SQLite and PostgreSQL: timestamps through ``UTCDateTime`` (always timezone-aware UTC), JSON
through ``JSON`` (text on SQLite, ``json`` on PostgreSQL), bytes through ``LargeBinary`` (``BLOB`` / ``bytea``).
Migrations (``jobs/store/migrations``) must create exactly this; a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

NAMING = {"ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
          "fk": "fk_%(table_name)s_%(column_0_name)s", "pk": "pk_%(table_name)s"}
"""Constraint names spelled out, so a migration can name what it alters on either database."""

metadata = MetaData(naming_convention=NAMING)

SeqInteger = BigInteger().with_variant(Integer, "sqlite")
"""A 64-bit counter; on SQLite ``INTEGER`` (the only type that makes a primary key its rowid, i.e. autoincrement)."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and read back timezone-aware (SQLite keeps no zone; PostgreSQL ``timestamptz``)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the job store keeps UTC timestamps only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


jobs = Table(
    "jobs", metadata,
    Column("seq", SeqInteger, primary_key=True, autoincrement=True, doc="acceptance order: the queue, the cursor"),
    Column("id", String(32), nullable=False, unique=True, doc="public id: j_ + 22 URL-safe random characters"),
    Column("owner", String(200), nullable=False, doc="account; '' for jobs without one (NULLs never collide)"),
    Column("status", String(16), nullable=False),
    Column("input", JSON, nullable=False, doc="the job's parameters, as accepted"),
    Column("idempotency_key", String(255), nullable=True),
    Column("body_hash", String(64), nullable=True, doc="SHA-256 (hex) of the request that came with the key"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True, doc="first claimed by a dispatcher"),
    Column("completed_at", UTCDateTime, nullable=True),
    Column("expires_at", UTCDateTime, nullable=False, doc="retention: the janitor deletes the job after this"),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0, doc="claims so far (a reclaim after a lost lease: +1)"),
    Column("claim_owner", String(200), nullable=True, doc="the dispatcher holding the job"),
    Column("claim_expires_at", UTCDateTime, nullable=True, doc="its lease: claimable again after this"),
    Column("cancel_requested_at", UTCDateTime, nullable=True, doc="the holder sees it on renew and stops"),
    Column("progress_step", Integer, nullable=True),
    Column("progress_steps", Integer, nullable=True),
    Column("last_event_seq", Integer, nullable=False, default=0, doc="the job's event counter"),
    Column("generation", JSON, nullable=True,
           doc="the worker's account of the result: worker_id, model, seed, params, timings (no images)"),
    UniqueConstraint("owner", "idempotency_key"),
    Index(None, "status", "seq"),   # the queue: oldest claimable first; queue positions
    Index(None, "owner", "seq"),    # one owner's listing, newest first
    Index(None, "owner", "created_at"),  # one owner's listing within a date range
    Index(None, "expires_at"),      # the janitor
    Index(None, "completed_at"),    # fair share: GPU time used within the window
)

results = Table(
    "results", metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), primary_key=True, doc="'output' (what the job made) or 'input' (what it was given)"),
    Column("index", Integer, primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("media_type", String(64), nullable=False),
    Column("size", Integer, nullable=False, doc="bytes"),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("data", LargeBinary, nullable=False, doc="the bytes themselves: every balancer host reads the same"),
)

thumbnails = Table(
    "thumbnails", metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("index", Integer, primary_key=True, doc="the output result it shows"),
    Column("sha256", String(64), nullable=False, doc="of these bytes: the ETag"),
    Column("media_type", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False, doc="a small WebP, made once from the result"),
)

job_events = Table(
    "job_events", metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, doc="1, 2, ... per job: an SSE stream's Last-Event-ID"),
    Column("kind", String(16), nullable=False),
    Column("data", JSON, nullable=False),
    Column("at", UTCDateTime, nullable=False),
)

tombstones = Table(
    "job_tombstones", metadata,
    Column("id", String(32), primary_key=True, doc="a deleted job's id: the API answers 410 Gone, not 404"),
    Column("owner", String(200), nullable=False),
    Column("expired_at", UTCDateTime, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", String(80), primary_key=True, doc="the message's webhook-id: msg_{job}_{event}_{sequence}"),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("event", String(16), nullable=False, doc="start, output (progress) or completed"),
    Column("url", String(2048), nullable=False),
    Column("body", Text, nullable=False, doc="the signed JSON, frozen when the event happened"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False, doc="pending, delivered, failed (gave up) or refused"),
    Column("retried", Boolean, nullable=False, doc="failed attempts are retried (completed) or not (the others)"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("first_attempt_at", UTCDateTime, nullable=True, doc="the retry window counts from here"),
    Column("next_attempt_at", UTCDateTime, nullable=True, doc="when pending: due at this time"),
    Column("claim_owner", String(200), nullable=True, doc="the service sending it now"),
    Column("claim_expires_at", UTCDateTime, nullable=True, doc="its lease: another service may send after this"),
    Index(None, "job_id", "created_at"),      # a job's delivery log; the progress throttle
    Index(None, "status", "next_attempt_at"),  # the due deliveries
)

webhook_attempts = Table(
    "webhook_attempts", metadata,
    Column("delivery_id", String(80), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), primary_key=True),
    Column("number", Integer, primary_key=True, doc="1, 2, ... per delivery"),
    Column("at", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False, doc="delivered, failed or refused"),
    Column("status_code", Integer, nullable=True, doc="the receiver's HTTP status (none: no answer)"),
    Column("error", Text, nullable=True, doc="what went wrong, in words"),
    Column("latency_ms", Float, nullable=False),
    Column("redelivery", Boolean, nullable=False, doc="asked for through the API, not scheduled"),
)

accounts = Table(
    "accounts", metadata,
    Column("id", String(32), primary_key=True, doc="acc_ + 16 random characters: the owner of the account's jobs"),
    Column("name", String(100), nullable=False, unique=True, doc="what operators call it: a studio, an app"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("weight", Float, nullable=False, default=1.0, server_default="1",
           doc="its fair share of GPU time against other owners' (2: twice an account of weight 1)"),
    Column("max_running", Integer, nullable=True, doc="most jobs queued or running at once; NULL: no limit"),
    Column("daily_images", Integer, nullable=True, doc="most images asked for per UTC day; NULL: no limit"),
    Column("results_days", Integer, nullable=True, doc="days its jobs and results are kept; NULL: the service's"),
    Column("inputs_days", Integer, nullable=True, doc="days its jobs keep their input photo; NULL: as the job"),
)

account_members = Table(
    "account_members", metadata,
    Column("account_id", String(32), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("user", String(200), primary_key=True, doc="the person's login name"),
    Column("role", String(16), nullable=False, doc="admin or member"),
    Column("added_at", UTCDateTime, nullable=False),
    Column("password_hash", String(200), nullable=True, doc="scrypt of the browser sign-in password; NULL: none set"),
    Column("password_set_at", UTCDateTime, nullable=True, doc="sessions signed in before this are refused"),
)

sign_in_failures = Table(
    "sign_in_failures", metadata,
    Column("id", SeqInteger, primary_key=True, autoincrement=True),
    Column("name", String(320), nullable=False, doc="the account and member name tried: account/user"),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "name", "at"),  # one name's failures in the lockout window
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(32), primary_key=True, doc="key_ + 16 random characters"),
    Column("account_id", String(32), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("prefix", String(32), nullable=False, unique=True, doc="the key's first 16 characters, shown in lists"),
    Column("hash", String(64), nullable=False, unique=True, doc="SHA-256 (hex) of the whole key; never the key"),
    Column("label", String(200), nullable=True, doc="what it is for, in the operator's words"),
    Column("scopes", JSON, nullable=False, doc="what it may do: generate, history, admin"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True, doc="written at most once a minute"),
    Column("revoked_at", UTCDateTime, nullable=True, doc="refused on every service from then on"),
    Index(None, "account_id"),  # an account's keys
)
