"""HAProxy's own answers in ``haproxy.cfg``: a readable page for browsers, ``ErrorBody`` JSON for API clients."""

from __future__ import annotations

import json
from dataclasses import dataclass


def quoted(text: str) -> str:
    """``text`` in single quotes for the config file (which has no escape for them)."""
    if "'" in text:
        raise ValueError("texts in haproxy.cfg must not contain single quotes")
    return f"'{text}'"


def json_body(error: str, detail: str) -> str:
    """An ``ErrorBody``-shaped JSON string, quoted for the config file."""
    return quoted(json.dumps({"error": error, "detail": detail, "fields": []}))


def html_body(title: str, detail: str, refresh: int | None = None) -> str:
    """A small readable page for browsers, quoted for the config file."""
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}<title>Portrait Studio: {title}</title>'
        f"</head><body><h1>{title}</h1><p>{detail}</p></body></html>"
    )
    return quoted(page)


@dataclass(frozen=True)
class Answer:
    """One of our answers: the template writes it as two ``http-request return`` rules (HTML, then JSON)."""

    status: int
    headers: str
    """Extra ``hdr NAME VALUE`` arguments, with a leading space, or empty."""
    html: str
    json: str
    condition: str
    """A plain AND of ACLs; ``wants_html`` picks the rule."""


def answer(status: int, error: str, detail: str, condition: str, title: str, *, headers: str = "",
           refresh: int | None = None) -> Answer:
    """The answer ``status`` when ``condition`` holds: an HTML page for browsers, else JSON.

    ``condition`` must be a plain AND of ACLs (no ``||``): ``wants_html`` is ANDed to it.
    """
    if "||" in condition or " or " in condition:
        raise ValueError(f"use a named ACL instead of an OR: {condition}")
    return Answer(status, f" {headers}" if headers else "", html_body(title, detail, refresh),
                  json_body(error, detail), condition)
