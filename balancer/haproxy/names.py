"""The names haproxy.cfg and the code that talks to HAProxy agree on: backends, tables, the cookie."""

from __future__ import annotations

from webui.contract import PERSISTENCE_COOKIE

COOKIE_NAME = PERSISTENCE_COOKIE
"""The persistence cookie HAProxy inserts; its value is the node name."""
COOKIE_OPTIONS = "insert indirect nocache httponly attr SameSite=Lax"
"""Inserted by HAProxy, never seen by the node, not cached, not readable by scripts, same-site only."""

WEBS_BACKEND = "webs"
WORKERS_BACKEND = "workers"
PROBES_BACKEND = "worker_probes"
PART_BACKENDS = {"web": WEBS_BACKEND, "worker": WORKERS_BACKEND}
"""Node part -> the HAProxy backend its server is in."""
JOBS_BACKEND = "jobs"
JOBS_SERVER = "local"
"""The jobs backend's server: this balancer host's jobs service (``python -m jobs``), which its sidecar runs."""
HOLDING_SERVER = "jobs:hold"
"""This host's jobs service as the workers backend's backup: it holds REST jobs while no worker is up (a ``:``, which
no node's name has)."""
JOBS_BACKUP_PREFIX = "peer-"
"""Before a balancer's name: its jobs service as a backup server of another balancer's ``jobs`` backend."""
RATES_TABLE = "job_rates"
"""A backend that only holds the per-client generation rate table."""
STICKY_TABLE = "sticky_requests"
"""A backend that only holds the table of UI requests in flight per persistence cookie value."""
BODIES_TABLE = "client_bodies"
"""A backend that only holds the table of requests with a body in flight per client."""
STICK_COUNTERS = 7
"""Per-client tables the public frontend tracks at once: sc0 connections, sc1 job rates, sc2 sticky UI
requests, sc3-sc5 logins (``balancer.haproxy.login``), sc6 bodies."""
DIRECT_RUN_PATHS = ("/gradio_api/run/", "/gradio_api/api/")
"""Gradio routes that run an event outside its queue (and around its limits): never public, but for
``PAGE_RUN_PATH``."""
PAGE_RUN_PATH = "/gradio_api/run/predict"
"""Where the page posts its small unqueued events (presets, sizes, reuse seed); the web front refuses a
queued event there (``webui/web/gradio_routes.py``)."""
