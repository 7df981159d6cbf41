"""uvicorn's access log without query strings and with bounded paths.

uvicorn logs every request's full URI: the query strings of Gradio's routes carry session
hashes and upload ids (``queue/data?session_hash=…``), and a client sending long URIs fills the
disk with them. ``uvicorn_log_config`` is uvicorn's own logging configuration with the access
lines formatted by ``PathOnlyAccessFormatter``: the path without its query, cut to ``max_path``
characters, and a timestamp like the node's other log lines; in JSON mode (``webui.log_setup``) every line is
a JSON object, the access lines' paths shortened the same way. Every line names its request's ids.
"""

from __future__ import annotations

import copy
import logging

from pythonjsonlogger.json import JsonFormatter
from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import AccessFormatter

from webui.log_setup import JSON_FIELDS, JSON_OPTIONS, traced, usable_format

MAX_LOGGED_PATH = 200
"""Characters of a request's path an access log line keeps."""

CUT = "..."
"""Marks a path that was cut."""


def loggable_path(full_path: str, max_path: int = MAX_LOGGED_PATH) -> str:
    """``full_path`` without its query string, at most ``max_path`` characters (then ending in ``CUT``)."""
    path = full_path.partition("?")[0]
    return path if len(path) <= max_path else path[: max_path - len(CUT)] + CUT


def short_path_record(record: logging.LogRecord, max_path: int) -> logging.LogRecord:
    """An access ``record`` (uvicorn's five arguments) with its path passed through ``loggable_path``."""
    if isinstance(record.args, tuple) and len(record.args) == 5:
        client, method, full_path, version, status = record.args
        record = copy.copy(record)
        record.args = (client, method, loggable_path(str(full_path), max_path), version, status)
    return record


class PathOnlyAccessFormatter(AccessFormatter):
    """uvicorn's access line, its path passed through ``loggable_path``."""

    def __init__(self, *args: object, max_path: int = MAX_LOGGED_PATH, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.max_path = max_path

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record = short_path_record(record, self.max_path)
        if not hasattr(record, "trace"):  # a handler without ``TraceFilter``: no ids
            record = copy.copy(record)
            record.trace = ""
        return super().formatMessage(record)


class PathOnlyJsonFormatter(JsonFormatter):
    """An access line as a JSON object, its path passed through ``loggable_path``."""

    def __init__(self, max_path: int = MAX_LOGGED_PATH) -> None:
        super().__init__(list(JSON_FIELDS), **JSON_OPTIONS)
        self.max_path = max_path

    def format(self, record: logging.LogRecord) -> str:
        return super().format(short_path_record(record, self.max_path))


def uvicorn_log_config(max_path: int = MAX_LOGGED_PATH, fmt: str | None = None) -> dict:
    """uvicorn's ``log_config`` with ``PathOnlyAccessFormatter`` for the access lines (``PathOnlyJsonFormatter`` in
    JSON mode; text where ``fmt`` is not a format), every line with its request's ids."""
    config = copy.deepcopy(LOGGING_CONFIG)
    if usable_format(fmt) == "json":
        config["formatters"]["default"] = {"()": PathOnlyJsonFormatter, "max_path": max_path}
        config["formatters"]["access"] = {"()": PathOnlyJsonFormatter, "max_path": max_path}
        return traced(config)
    config["formatters"]["access"] = {
        "()": PathOnlyAccessFormatter,
        "fmt": '%(asctime)s %(levelprefix)s %(client_addr)s%(trace)s - "%(request_line)s" %(status_code)s',
        "max_path": max_path,
    }
    return traced(config)
