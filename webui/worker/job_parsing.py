"""Turning an HTTP request into a validated job, and every API error into a clear ``ErrorBody``.

A job arrives as a JSON body or as query parameters; problems become a 422 that names each
field and what it allows, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.types import Receive, Scope

from webui.contract import MINIMAL_RESULT
from webui.schema import (
    EffectiveParams,
    ErrorBody,
    GenerationRequest,
    Limits,
    denoising_steps,
)
from webui.trace import headers_ids

JSON_BODY_SLACK = 64 * 1024
"""Bytes a JSON body may have on top of the base64 of the largest allowed upload."""


def max_job_body(max_upload_bytes: int) -> int:
    """The largest job body: the base64 of the largest allowed upload, and ``JSON_BODY_SLACK``."""
    return max_upload_bytes * 4 // 3 + JSON_BODY_SLACK


class ApiError(Exception):
    """A request that ends with an error status and an ``ErrorBody``."""

    def __init__(
        self, status: int, error: str, detail: str, fields: list[dict] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.body = ErrorBody(error=error, detail=detail, fields=fields or [])
        self.headers = dict(headers or {})


def schema_range(name: str) -> str:
    """``from 0.0 to 30.0`` or ``above 0.0 and at most 1.0``: a ``GenerationRequest`` field's bounds."""
    bounds = {
        key: getattr(item, key)
        for item in GenerationRequest.model_fields[name].metadata
        for key in ("ge", "gt", "le")
        if hasattr(item, key)
    }
    if "gt" in bounds:
        return f"above {bounds['gt']} and at most {bounds['le']}"
    return f"from {bounds['ge']} to {bounds['le']}"


def allowed_values(limits: Limits) -> dict[str, str]:
    """For each request field, what it may be (shown next to a field's error)."""
    size = f"an integer from 64 to {limits.max_side}, a multiple of {limits.family.size_multiple}"
    allowed = {
        "prompt": f"text of 1 to {limits.max_prompt_chars} characters",
        "negative_prompt": f"text of at most {limits.max_prompt_chars} characters",
        "steps": f"an integer from 1 to {limits.max_steps}",
        "width": size,
        "height": size,
        "num_images": f"an integer from 1 to {limits.max_images}",
        "init_image": f"a base64 PNG, JPEG or WebP image of at most {limits.max_upload_bytes} bytes "
        f"and {limits.max_upload_pixels} pixels",
    }
    for name in ("guidance", "lora_scale", "strength"):
        allowed[name] = f"a number {schema_range(name)}"
    allowed["seed"] = f"an integer {schema_range('seed')}"
    return allowed


def validation_problems(errors: list[dict], limits: Limits) -> list[dict]:
    """Pydantic errors as ``{"field", "message", "allowed"}`` dicts (never echoing the input)."""
    allowed = allowed_values(limits)
    known = ", ".join(GenerationRequest.model_fields)
    problems = []
    for error in errors:
        field = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query"))
        if not field and error.get("type") == "value_error":
            # The schema's cross-field check joins its findings as "field: problem; field: problem".
            cause = str(error.get("ctx", {}).get("error", error.get("msg", "")))
            pairs = [part.partition(": ") for part in cause.split("; ")]
            problems.extend({"field": name, "message": message} for name, _, message in pairs)
        elif error.get("type") == "extra_forbidden":
            problems.append({"field": field, "message": "unknown field", "allowed": f"the fields {known}"})
        else:
            problems.append({"field": field or "body", "message": error.get("msg", "invalid")})
    for problem in problems:
        if problem["field"] in allowed:
            problem.setdefault("allowed", allowed[problem["field"]])
    return problems


def invalid_request(problems: list[dict]) -> ApiError:
    """A 422 naming every problem and what each field allows."""
    parts = [
        f"{p['field']}: {p['message']}" + (f" (allowed: {p['allowed']})" if p.get("allowed") else "") for p in problems
    ]
    return ApiError(422, "invalid_request", "Invalid request: " + "; ".join(parts), fields=problems)


# --------------------------------------------------------------------------- request parsing


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, "body_too_large", f"The request body is larger than {limit} bytes.")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_payload(body: bytes, content_type: str, query: Mapping[str, str]) -> dict[str, Any]:
    """The job's fields: the JSON body if there is one, else the query parameters."""
    if not body.strip():
        return dict(query)
    media = content_type.split(";")[0].strip().lower()
    # No content type, or curl's default form type for ``-d '{...}'``: read it as JSON too.
    if media not in ("", "application/json", "application/x-www-form-urlencoded") and not media.endswith("+json"):
        detail = f"Send the job as JSON (Content-Type: application/json), not {media}."
        raise ApiError(415, "unsupported_media_type", detail)
    try:
        data = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise ApiError(422, "invalid_json", f"The body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")
        raise ApiError(422, "invalid_json", f"The body must be a JSON object of job fields, not {kind}.")
    return data


def validate_job(payload: dict[str, Any], limits: Limits) -> GenerationRequest:
    """Validate the job's fields against the worker's limits (422 on any problem)."""
    try:
        return GenerationRequest.model_validate(payload, context={"limits": limits})
    except ValidationError as exc:
        raise invalid_request(validation_problems(exc.errors(include_url=False), limits)) from None


def prefers_minimal(request: Request) -> bool:
    """Whether the job came with ``Prefer: return=minimal`` (``MINIMAL_RESULT``: no ``image`` in its result)."""
    preferences = ",".join(request.headers.getlist("prefer")).lower().split(",")
    return MINIMAL_RESULT in (preference.split(";")[0].strip() for preference in preferences)


def preference_applied(minimal: bool) -> dict[str, str]:
    """The response headers that say a ``Prefer: return=minimal`` was taken (RFC 7240)."""
    return {"Preference-Applied": MINIMAL_RESULT} if minimal else {}


def scope_request_id(scope: Scope) -> str:
    """The request's id: the one its middleware took, else its ``X-Request-ID`` if valid, else a new one
    (``webui.trace``)."""
    return scope.get("state", {}).get("request_id") or headers_ids(scope.get("headers") or [])[0]


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (call after the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def params_summary(job: GenerationRequest) -> dict[str, Any]:
    """What the request log shows of a job (not the prompt itself)."""
    return {
        "mode": "retouch" if job.init_image is not None else "text2img",
        "steps": job.steps, "width": job.width, "height": job.height, "num_images": job.num_images,
        "seed": job.seed, "lora_scale": job.lora_scale, "prompt_chars": len(job.prompt),
    }


def expected_steps(params: EffectiveParams) -> int:
    """Denoising steps the pipeline will run: fewer for a retouch (diffusers' ``get_timesteps``)."""
    return denoising_steps(params.steps, params.strength if params.mode == "retouch" else None)


def job_steps(params: EffectiveParams) -> int:
    """Denoising steps of the whole job, as its progress counts them: each image's, one image after the other."""
    return expected_steps(params) * params.num_images
