"""Settings of the jobs service (``python -m jobs``): every one a flag (``--dispatch-slots 2``) or a
``PORTRAIT_JOBS_`` environment variable (``PORTRAIT_JOBS_DISPATCH_SLOTS=2``); flags win.

A PostgreSQL URL with a password belongs in the environment (``PORTRAIT_JOBS_STORE_URL``), never on a command
line, where every local user can read it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from jobs.contract import KEY_CACHE_SECONDS, LEASE_SECONDS
from jobs.store import default_url
from jobs.webhooks.targets import WebhookTargetPolicy
from webui.settings_common import ServerTLSSettings


class JobsSettings(ServerTLSSettings):
    """Settings of the jobs service. One subcommand:

    accounts    accounts, their members and API keys (python -m jobs accounts --help)
    """

    model_config = SettingsConfigDict(cli_prog_name="python -m jobs", env_prefix="PORTRAIT_JOBS_",
                                      cli_kebab_case=True, cli_implicit_flags=True, extra="ignore")

    host: str = Field("127.0.0.1", description="Address the /v1/jobs API listens on.")
    port: int = Field(7970, description="Port the /v1/jobs API listens on.")
    peer_host: str | None = Field(None, description="Also listen here, over mutual TLS (--tls-cert, --tls-ca), for "
                                  "the other balancers' HAProxy (jobs.backups); --host stays plain HTTP.")
    peer_port: int | None = Field(None, description="Port of the --peer-host listener (default: --port).")
    tls_cert: Path | None = Field(None, description="With --peer-host: this balancer's certificate and key (its "
                                  "tls.cert_file); only clients with a certificate from --tls-ca are served there.")
    tls_ca: Path | None = Field(None, description="With --peer-host: the cluster's CA certificate (ca.crt).")
    run_dir: Path = Field(Path("run"), description="Where the default SQLite store lives (jobs.sqlite3).")
    store_url: str | None = Field(
        None, description="The job store: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB (several balancer "
        "hosts). Default: SQLite in --run-dir. With a password: set PORTRAIT_JOBS_STORE_URL, not the flag.")
    worker_queue_url: str = Field("http://127.0.0.1:8081", description="The workers' queue (HAProxy's worker "
                                  "queue listener, or one worker).")
    queue_ca: Path | None = Field(None, description="CA certificate of an https worker queue (another host).")
    queue_cert: Path | None = Field(None, description="This service's client certificate for that queue.")
    dispatch_slots: int = Field(1, ge=1, description="Jobs run at once: the number of workers to keep busy.")
    lease_seconds: float = Field(LEASE_SECONDS, gt=0, le=10, description="How long a dispatcher's claim on a "
                                 "job lasts without renewal; a dead dispatcher's jobs are taken again after it.")
    job_timeout: float = Field(900, gt=0, description="Seconds from a job's acceptance until it fails for want "
                               "of a worker (until then it waits for one).")
    worker_timeout: float = Field(600, gt=0, description="Seconds one attempt may take on a worker.")
    queue_wait: float = Field(60, gt=0, description="Seconds a synchronous POST /generate waits for a worker to "
                              "start (or resume) its job before a 503 (the cluster's limits.queue_timeout).")
    retention_days: float = Field(30, gt=0, description="Days a job and its results are kept (then 410 Gone).")
    janitor_every: float = Field(60, gt=0, description="Seconds between the janitor's sweeps.")
    site_login: bool = Field(False, description="The site has a login (HAProxy checks its basic auth): a request's "
                             "user name makes its jobs that login's (History). Off: requests without an API key are "
                             "anonymous, whatever user name they send.")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="The largest job body a client may submit.")
    webhook_policy: Path | None = Field(
        None, description="JSON file with the webhook target policy ({\"allow_http\", \"allow\", \"deny\"}); "
        "default: https only, no loopback, private, link-local or metadata addresses.")
    webhook_secret_file: Path | None = Field(
        None, description="File with the webhook signing secret (whsec_...; the same file on every balancer host). "
        "Default: run-dir/webhook-secret, generated once (mode 0600) and reused.")
    share_key_file: Path | None = Field(
        None, description="File with the share-link signing key (shk_...; the same file on every balancer host). "
        "Default: run-dir/share-key, generated once (mode 0600) and reused.")
    webhook_retry_window: float = Field(24 * 3600, gt=0, description="Seconds a failed completed-event webhook "
                                        "is retried after its first attempt.")
    webhook_first_retry: float = Field(5, gt=0, le=3600, description="Seconds before the first retry of a failed "
                                       "webhook (then doubling, up to one an hour).")
    webhook_poll: float = Field(1, gt=0, description="Seconds between looks for due webhook deliveries.")
    key_cache_seconds: float = Field(KEY_CACHE_SECONDS, ge=0, le=KEY_CACHE_SECONDS, description="Seconds an API key "
                                     "looked up in the store is trusted: a revoked key is refused within this.")

    @model_validator(mode="after")
    def _check_peer_listener(self) -> JobsSettings:
        if (self.peer_host is None) != (self.tls_cert is None):
            raise ValueError("--peer-host and --tls-cert go together: the peer listener serves mutual TLS only")
        return self

    def resolved_store_url(self) -> str:
        return self.store_url or default_url(self.run_dir)

    def target_policy(self) -> WebhookTargetPolicy:
        if self.webhook_policy is None:
            return WebhookTargetPolicy()
        return WebhookTargetPolicy.model_validate(json.loads(self.webhook_policy.read_text()))
