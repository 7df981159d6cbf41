"""The worker's one mapping of errors to HTTP answers (``http_error``, ``add_error_handlers``).

Domain errors (``JobError``) get their status from ``ERROR_STATUSES``; refusals at the boundary
(``ApiError``), FastAPI's validation errors, Starlette's HTTP errors and anything unexpected all
answer an ``ErrorBody`` as JSON, never a traceback, and name their outcome for the request log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from webui.contract import OUT_OF_MEMORY_STATUS
from webui.schema import Limits
from webui.worker.errors import GenerationFailed, JobError, NotReady, OutOfMemory, QueueFull
from webui.worker.job_parsing import ApiError, invalid_request, validation_problems
from webui.worker.request_log import status_outcome

logger = logging.getLogger("webui.worker")  # the worker's log name, as for its routes

ERROR_STATUSES: dict[type[JobError], int] = {
    NotReady: 503, QueueFull: 503, OutOfMemory: OUT_OF_MEMORY_STATUS, GenerationFailed: 500,
}
"""The HTTP status of each domain error. 503s are in ``RETRYABLE_STATUSES`` (nothing ran); an
out-of-memory is not (HAProxy would take every worker through the same OOM)."""


def http_error(error: JobError) -> ApiError:
    """The HTTP answer to a domain error (the one place that maps them)."""
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return ApiError(ERROR_STATUSES.get(type(error), 500), error.code, error.detail, headers=headers)


def error_response(request: Request, error: ApiError) -> JSONResponse:
    """The JSON response for ``error`` (and its outcome for the request log)."""
    request.state.outcome = error.body.error
    return JSONResponse(error.body.model_dump(), status_code=error.status, headers=error.headers)


def add_error_handlers(app: FastAPI, limits: Callable[[], Limits]) -> None:
    """Answer every error ``app`` raises as JSON; ``limits`` names the allowed values of invalid fields."""

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(JobError)
    async def on_job_error(request: Request, exc: JobError) -> JSONResponse:
        return error_response(request, http_error(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, invalid_request(validation_problems(list(exc.errors()), limits())))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = ApiError(exc.status_code, status_outcome(exc.status_code),
                         f"{exc.detail}: {request.method} {request.url.path}", headers=exc.headers)
        return error_response(request, error)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises ``exc`` after this response, so uvicorn logs the traceback.
        logger.error("unexpected %s in %s %s (request id %s)", type(exc).__name__, request.method, request.url.path,
                     request.state.request_id)
        error = ApiError(500, "internal_error",
                         f"Unexpected error; it is in the worker log under request id {request.state.request_id}.")
        return error_response(request, error)
