"""Every process's logging in one place: text or JSON lines (``PORTRAIT_LOG_FORMAT``), each with the ids of the
work in hand (``webui.trace``), so that one grep follows a request or a job across processes.

Text: ``TIME LEVEL LOGGER [request_id=R job_id=J]: message`` (the brackets only while an id is bound). JSON (python-
json-logger): one object a line with ``time level logger message request_id job_id`` (and ``exc_info`` after an
exception).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from webui import trace

LOG_FORMAT_ENV = "PORTRAIT_LOG_FORMAT"
"""``text`` (the default) or ``json``; every part the sidecar starts inherits it."""
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(trace)s: %(message)s"
JSON_FIELDS = ("levelname", "name", "message", "request_id", "job_id")
JSON_OPTIONS: dict[str, Any] = {
    "rename_fields": {"levelname": "level", "name": "logger"},
    "timestamp": "time",  # ISO 8601, UTC
    "reserved_attrs": [*RESERVED_ATTRS, "trace", "color_message"],  # the text form's extras
}


class TraceFilter(logging.Filter):
    """Puts the bound ids on every record: ``request_id``, ``job_id`` (None when unbound) and ``trace`` (text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = trace.request_id.get()
        record.job_id = trace.job_id.get()
        ids = " ".join(f"{name}={value}" for name, value in (("request_id", record.request_id),
                                                               ("job_id", record.job_id)) if value)
        record.trace = f" [{ids}]" if ids else ""
        return True


def log_format(value: str | None = None) -> str:
    """``value``, else ``PORTRAIT_LOG_FORMAT``, else ``text``; a clear error for anything else."""
    chosen = (value or os.environ.get(LOG_FORMAT_ENV) or "text").strip().lower()
    if chosen not in LOG_FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV}={chosen!r}: the log format is 'text' or 'json'")
    return chosen


def usable_format(value: str | None = None) -> str:
    """``log_format``, or ``text`` where that is not a format (``configure_logging`` says so once)."""
    try:
        return log_format(value)
    except ValueError:
        return "text"


def json_formatter() -> logging.Formatter:
    return JsonFormatter(list(JSON_FIELDS), **JSON_OPTIONS)


def formatter(fmt: str | None = None) -> logging.Formatter:
    """The formatter of ``log_format(fmt)``."""
    return json_formatter() if log_format(fmt) == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: int = logging.INFO, fmt: str | None = None) -> None:
    """The root logger writes to stderr in ``log_format(fmt)`` (text, with a warning, if that is not a format),
    every record with its ids."""
    handler = logging.StreamHandler()
    handler.addFilter(TraceFilter())
    try:
        handler.setFormatter(formatter(fmt))
        problem = None
    except ValueError as exc:
        handler.setFormatter(formatter("text"))
        problem = exc
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if problem is not None:
        logging.getLogger(__name__).warning("%s; logging as text", problem)


def traced(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a ``logging.config.dictConfig`` dict, e.g. uvicorn's ``log_config``) with every handler adding
    the ids to its records."""
    config["filters"] = {**config.get("filters", {}), "trace": {"()": TraceFilter}}
    for handler in config.get("handlers", {}).values():
        handler["filters"] = [*handler.get("filters", []), "trace"]
    return config
