"""The jobs service's section (``jobs:``): where it listens, its store, its backups, what goes through it."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from balancer.config.basics import NAME_PATTERN, Listener

JOBS_STORE_URL_ENV = "PORTRAIT_JOBS_STORE_URL"
"""The job store's URL in launch.py's environment: the one place for a URL with a password; it wins over the
cluster file's ``jobs.store_url``."""
STORE_SCHEMES = ("sqlite", "postgresql")


class JobsSpec(Listener):
    """The jobs service (``python -m jobs``: ``/v1/jobs``, its dispatcher and janitor; docs/jobs.md), run by the
    sidecar of every balancer host and reached through the public frontend's ``/v1/jobs``."""

    enabled: bool = Field(True, description="Run the jobs service on each balancer host and route /v1/jobs to it.")
    port: int = Field(8407, ge=1, le=65535)
    store_url: str | None = Field(
        None, description="The job store: unset for SQLite in the run directory (one balancer host); a PostgreSQL "
        "URL (postgresql+psycopg://USER@HOST/DB) that several balancer hosts share. No password here: give it in "
        f"{JOBS_STORE_URL_ENV} (the whole URL, which wins over this), PGPASSWORD or ~/.pgpass.",
    )
    dispatch_slots: int | None = Field(
        None, ge=1, description="Jobs each balancer's service runs at once; unset: the number of workers.")
    job_timeout: float = Field(
        900.0, gt=0, description="Seconds from a job's acceptance until it fails for want of a worker.")
    retention_days: float = Field(30.0, gt=0, description="Days a job and its results are kept (then 410 Gone).")
    rest: bool = Field(
        False, description="REST POST /generate and /generate/stream go through the jobs service, which records "
        "each (about 18 ms more a request: bench/results/sync-jobs.md). Off: they go straight to the workers, which "
        "record each as a job (about 3 ms), and the service holds them only while no worker is up.")
    backups: dict[Annotated[str, Field(pattern=NAME_PATTERN)], str] = Field(
        default_factory=dict, description="Other balancer hosts' jobs services (name: HOST:PORT) that serve /v1/jobs "
        "through this HAProxy while its own is down (backup servers, health-checked); they must share its store. "
        "Unset with a floating address and a PostgreSQL store: launch.py names the other balancers' "
        "(balancer/config/jobs_peers.py). With tls they are reached over mutual TLS.")
    peer_host: str | None = Field(
        None, description="With tls: where this service also listens, over mutual TLS (port: port), for the other "
        "balancers' HAProxy. Unset with backups that launch.py names: this balancer's address.")
    peer_cert_name: str | None = Field(
        None, pattern=NAME_PATTERN, description="With tls: the name the backups' certificates carry (HAProxy's "
        "verifyhost). Default: the name in this balancer's own tls.cert_file (a pair may share one).")
    web_fronts: bool = Field(
        True, description="Web fronts run every generation (page, gradio_client, retouch) as a job of this service "
        "(--jobs-url): a reloaded page re-attaches to its job, a page that leaves no longer cancels it (its Cancel "
        "button does), any web front serves any job's result; the page and gradio_client see the same info, "
        "progress and errors as without it (docs/jobs.md).")
    relay: bool = Field(
        True, description="Gradio calls (the page's and gradio_client's joins and event streams) go through this "
        "service's stream relay, which has another web front take a call over when its own dies mid-call: no "
        "resend, no reload (docs/jobs.md). A few ms a call. Needs web_fronts.")
    sign_in: bool = Field(
        False, description="Members of accounts sign in to the studio page with their password (python -m jobs "
        "accounts set-password) and the page's jobs become their account's; the session survives a web front's "
        "death (docs/accounts.md). Needs web_fronts.")

    @model_validator(mode="after")
    def _check_store_url(self) -> JobsSpec:
        if self.store_url is None:
            return self
        parts = urlsplit(self.store_url)
        if parts.scheme.split("+")[0] not in STORE_SCHEMES:
            raise ValueError(f"jobs.store_url: {parts.scheme or 'no scheme'}: expected sqlite:///PATH or "
                             "postgresql+psycopg://USER@HOST/DB")
        if parts.password is not None:
            raise ValueError(f"jobs.store_url: no password in the cluster file (every reader of it sees it); set "
                             f"{JOBS_STORE_URL_ENV} in the balancer's environment, PGPASSWORD or ~/.pgpass")
        return self
