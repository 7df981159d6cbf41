"""The ``/v1/jobs`` HTTP API: ``create_app`` builds the FastAPI app; ``routes`` (the routes), ``submission`` (the
boundary checks), ``views`` (a job's public JSON), ``sse`` (its events), ``deliveries`` (its webhooks' log),
``errors`` (the one mapping to HTTP); ``generate`` and ``sync_jobs``: the worker's synchronous ``/generate`` routes,
each generation a job; ``shares`` (+ ``share_tokens``): signed, expiring links to a result; ``recipes``: a PNG's
recipe read back; ``history`` (delete, thumbnails), ``listing`` (a listing's filter); ``auth`` and ``owners``: who
is asking and whose job a request acts on; ``sessions``: browser sign-in for the web fronts;
``account_admin``: a signed-in admin's members and keys; ``worker_jobs``: REST generations workers record themselves."""

from __future__ import annotations

from fastapi import FastAPI

from jobs.api import account_admin, deliveries, errors, generate, history, recipes, sessions, shares, worker_jobs
from jobs.api.auth import KeyCache
from jobs.api.routes import JobsApi, router
from webui.trace import TraceIds

__all__ = ["JobsApi", "create_app"]


def create_app(jobs_api: JobsApi, **fastapi_options: object) -> FastAPI:
    """The API's app around ``jobs_api`` (the store and its helpers); ``fastapi_options`` e.g. a lifespan."""
    app = FastAPI(title="portrait-ha jobs", summary="Durable generation jobs: submit, follow, download, cancel.",
                  **fastapi_options)
    app.state.jobs_api = jobs_api
    app.state.keys = jobs_api.keys or KeyCache(jobs_api.engine)
    app.state.site_login = jobs_api.site_login
    app.state.sessions = jobs_api.sessions
    app.include_router(router)
    app.include_router(deliveries.router)
    app.include_router(history.router)
    app.include_router(generate.router)
    app.include_router(recipes.router)
    app.include_router(sessions.router)
    app.include_router(account_admin.router)
    app.include_router(worker_jobs.router)
    if jobs_api.shares is not None:
        app.include_router(shares.router)
    app.add_middleware(TraceIds)  # every log line of a request names it; its id passes on to the worker
    errors.install(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        return {"alive": True}

    return app
