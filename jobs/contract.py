"""Values every part of the jobs package agrees on: statuses in Replicate's words, event kinds, defaults."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

# --- statuses (Replicate's words; "starting" is queued: accepted, waiting for a dispatcher)
STARTING: Final = "starting"
"""Accepted and recorded, waiting in the queue for a dispatcher to claim it."""
PROCESSING: Final = "processing"
"""Claimed by a dispatcher, whose lease keeps it; an expired lease makes it claimable again."""
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELED: Final = "canceled"
STATUSES: Final = (STARTING, PROCESSING, SUCCEEDED, FAILED, CANCELED)
ACTIVE: Final = (STARTING, PROCESSING)
"""Not finished: a result, an error or a cancel may still be written."""
TERMINAL: Final = (SUCCEEDED, FAILED, CANCELED)
"""Finished: written once, never changed again."""
EXPIRED: Final = "expired"
"""Not a status a job has: what a tombstone says of a job whose retention ran out (the API's 410 Gone)."""

# --- event kinds (the job's own log, read after a sequence number: an SSE stream resumes from Last-Event-ID)
EVENT_STATUS: Final = "status"
"""``{"status": ...}`` (plus ``"error"`` for failed, ``"results"``: the count, for succeeded)."""
EVENT_PROGRESS: Final = "progress"
"""``{"step": n, "steps": total}``: a denoising step."""

# --- defaults
LEASE_SECONDS: Final = 10.0
"""How long a dispatcher's claim lasts without a renewal; then another dispatcher may take the job."""
FAIR_SHARE_WINDOW: Final = timedelta(minutes=10)
"""How far back the dispatcher's fair share counts an owner's GPU time (plus what it runs now)."""
FAIR_SHARE_JOB_SECONDS: Final = 1.0
"""What a running job counts at least before any job finished in the window (then: their mean duration)."""
RETENTION: Final = timedelta(days=30)
"""How long a job, its results and its events are kept after it was accepted."""
JANITOR_BATCH: Final = 100
"""Jobs the janitor deletes in one transaction: short locks, bounded memory, however much has expired."""
PAGE_LIMIT_MAX: Final = 100
"""The most jobs one page of a listing holds."""
CLIENT_HELD: Final = "client:"
"""How a claim held for a client's open connection begins (a synchronous ``POST /generate``): no dispatcher
takes such a job over, and one whose lease ran out is canceled (its client's connection ended with its holder)."""
JOB_ID_PREFIX: Final = "j_"
"""A job id: this prefix and 22 URL-safe random characters (132 bits)."""
ANONYMOUS: Final = ""
"""The owner of jobs submitted without an account (a real value, not NULL: the idempotency key is unique per
owner, and SQL never counts two NULLs as equal)."""
OUTPUT: Final = "output"
"""A result's role: an image the job made (``"input"``: an image the job was given, e.g. for retouch)."""

# --- the service's edge (the balancer routes, bounds and times the API from these; the store writes its paths
# into webhook bodies)
API_PREFIX: Final = "/v1/jobs"
"""Where the API lives, on the service and on the balancer's public port alike."""
SESSIONS_PREFIX: Final = "/v1/sessions"
"""Browser sign-in (``jobs.api.sessions``): for web fronts only, through the worker-queue listener."""
ACCOUNT_PREFIX: Final = "/v1/account"
"""A signed-in admin's account page (``jobs.api.account_admin``): web fronts only, like sign-in."""
MAX_BODY_BYTES: Final = 64 * 1024
"""The largest job a client may submit (a text-to-image job is a few hundred bytes)."""
MAX_WAIT_S: Final = 60.0
"""The longest ``Prefer: wait=N`` a request may hold its connection."""
SHARE_PREFIX: Final = "/v1/share"
"""Where share links live (``/v1/share/{token}``): the one path the balancer serves without the site's login."""
RECIPES_PATH: Final = "/v1/recipes"
"""``POST`` a PNG the studio made: its recipe, as JSON."""
MAX_RECIPE_PNG_BYTES: Final = 16 * 1024 * 1024
"""The largest PNG ``RECIPES_PATH`` reads (a 2048x2048 result is about 12 MB; the balancer's default body cap)."""


def job_path(job_id: str, *parts: str | int) -> str:
    """``/v1/jobs/{id}`` and below, e.g. ``job_path(id, "results", 0)``: a path on the jobs service."""
    return "/".join([API_PREFIX, job_id, *map(str, parts)])


# --- webhooks (Replicate's event words; the store's delivery queue)
WEBHOOK_START: Final = "start"
WEBHOOK_OUTPUT: Final = "output"
"""Progress (Replicate's word: a prediction's output grew)."""
WEBHOOK_COMPLETED: Final = "completed"
WEBHOOK_DEFAULT_EVENTS: Final = (WEBHOOK_START, WEBHOOK_COMPLETED)
"""What a webhook receives when the client gives no ``webhook_events_filter``."""
WEBHOOK_PROGRESS_EVERY: Final = timedelta(milliseconds=500)
"""At most one progress (``output``) webhook per job this often."""
DELIVERY_LEASE_SECONDS: Final = 180.0
"""How long a service's claim on a webhook delivery lasts: longer than a claimed batch takes to send (32
deliveries, 8 at once, at most 15 s each: 60 s), so no other service sends one of them meanwhile."""

# --- accounts and API keys (docs/accounts.md)
SCOPE_GENERATE: Final = "generate"
"""Submit jobs and act on them: cancel, share, redeliver a webhook."""
SCOPE_HISTORY: Final = "history"
"""Read the account's jobs: list, status, results, events, webhook deliveries."""
SCOPE_ADMIN: Final = "admin"
"""Everything the other scopes allow (and, later, managing the account over the API)."""
SCOPES: Final = (SCOPE_GENERATE, SCOPE_HISTORY, SCOPE_ADMIN)
ROLES: Final = ("admin", "member")
"""A member's role in an account."""
API_KEY_PREFIX: Final = "ph_live_"
"""How every API key begins (a secret scanner can recognise it); its next 8 characters make its visible prefix."""
KEY_CACHE_SECONDS: Final = 5.0
"""The longest a jobs service trusts a key it looked up: a revoked key is refused everywhere within this."""
LAST_USED_EVERY: Final = timedelta(minutes=1)
"""A key's last-used time is written at most this often (not on every request)."""

# --- browser sign-in (docs/accounts.md#signing-in-in-a-browser)
SESSION_HOURS: Final = 12
"""How long a browser stays signed in without signing in again."""
SIGN_IN_FAILURES: Final = 5
"""Failed sign-ins of one member name within ``SIGN_IN_WINDOW`` that lock it until the oldest leaves the window."""
SIGN_IN_WINDOW: Final = timedelta(minutes=15)
