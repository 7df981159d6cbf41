"""Every error the ``/v1/jobs`` API answers, mapped to HTTP in this one place, as ``{"error","detail","fields"}``.

Domain errors (``jobs.errors``) get their status from ``STATUSES``; boundary errors are the worker's own
``ApiError`` (body too large, not JSON, invalid fields: ``webui.worker.job_parsing``); FastAPI's own validation
of query and path parameters becomes the same 422 shape; a job store that does not answer (cut off, restarting,
its pool exhausted) is a 503 with ``Retry-After``, which clients resend; anything unexpected is a 500 in words
(the traceback goes to the log only).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from jobs.errors import (
    ApiKeyNotFound,
    DeliveryInProgress,
    DeliveryNotFound,
    IdempotencyConflict,
    InvalidCursor,
    JobGone,
    JobNotFound,
    JobsError,
    JobStillActive,
    MemberNotFound,
    NotShareable,
    PhotoNotFound,
    ResultNotFound,
    ShareLinkExpired,
    ShareLinkInvalid,
    WebhooksOff,
)
from webui.schema import ErrorBody
from webui.worker.job_parsing import ApiError

logger = logging.getLogger(__name__)

STATUSES: dict[type[JobsError], int] = {
    JobNotFound: 404,
    ResultNotFound: 404,
    PhotoNotFound: 404,
    JobGone: 410,
    JobStillActive: 409,
    IdempotencyConflict: 422,
    InvalidCursor: 400,
    DeliveryNotFound: 404,
    DeliveryInProgress: 409,
    WebhooksOff: 503,
    NotShareable: 409,
    ShareLinkInvalid: 403,
    ShareLinkExpired: 410,
    MemberNotFound: 404,
    ApiKeyNotFound: 404,
}
"""Domain error -> HTTP status."""

RESPONSES = {status: {"model": ErrorBody} for status in (400, 404, 410, 413, 415, 422)}
"""The error answers, for the OpenAPI document."""
STORE_DOWN = (OperationalError, InterfaceError, PoolTimeout)
"""The store's driver or pool did not answer: a connection refused, cut or timed out, no free connection."""
STORE_RETRY_AFTER_S = 2
"""When a client should try again after a 503 for a store that does not answer (another balancer host's service
may take it sooner; the sidecar restarts a stuck one)."""


def domain_error(error: JobsError) -> ApiError:
    """The HTTP answer to a domain error."""
    return ApiError(STATUSES.get(type(error), 500), error.code, str(error))


def answer(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body.model_dump(), status_code=error.status, headers=error.headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into an ``ErrorBody`` answer."""

    @app.exception_handler(JobsError)
    async def on_domain_error(_request: Request, error: JobsError) -> JSONResponse:
        return answer(domain_error(error))

    @app.exception_handler(ApiError)
    async def on_api_error(_request: Request, error: ApiError) -> JSONResponse:
        return answer(error)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_parameters(_request: Request, error: RequestValidationError) -> JSONResponse:
        fields = [{"field": ".".join(str(part) for part in problem["loc"][1:]) or "request",
                   "message": problem["msg"]} for problem in error.errors()]
        detail = "Invalid request: " + "; ".join(f"{field['field']}: {field['message']}" for field in fields)
        return answer(ApiError(422, "invalid_request", detail, fields=fields))

    @app.exception_handler(HTTPException)
    async def on_http_error(_request: Request, error: HTTPException) -> JSONResponse:
        words = {404: "There is nothing at this address.", 405: "This address does not take that method."}
        detail = words.get(error.status_code, str(error.detail))
        return answer(ApiError(error.status_code, "http_error", detail, headers=error.headers))

    async def on_store_down(request: Request, error: Exception) -> JSONResponse:
        logger.warning("%s %s: the job store does not answer (%s)", request.method, request.url.path,
                       type(error).__name__)
        return answer(ApiError(503, "store_unavailable", "The job store does not answer; try again in a few seconds.",
                               headers={"Retry-After": str(STORE_RETRY_AFTER_S)}))

    for kind in STORE_DOWN:  # Starlette looks a handler up by the error's exact class or a base of it
        app.add_exception_handler(kind, on_store_down)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, _error: Exception) -> JSONResponse:
        logger.exception("unexpected error answering %s %s", request.method, request.url.path)
        return answer(ApiError(500, "internal_error", "Unexpected error; it is in the jobs service's log."))
