"""Whose job a request acts on: the user name of its HTTP basic auth (``Authorization: Basic``), or
``ANONYMOUS`` without one.

The name is trusted, not checked: every request that reaches the jobs service passed the balancer's login (the
public site, which checks the password) or carries the cluster secret (a web front, which passes on the
``Authorization`` its page's user logged in with). A site without a login has one owner for everything.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import Request

from jobs.contract import ANONYMOUS

MAX_OWNER_CHARS = 200
"""The ``owner`` column's width."""


def owner_of(request: Request) -> str:
    """The basic auth user name in ``request`` (cut to ``MAX_OWNER_CHARS``), else ``ANONYMOUS``."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return ANONYMOUS
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ANONYMOUS
    return decoded.partition(":")[0][:MAX_OWNER_CHARS]
