"""Share-link tokens: one result of one job, until a time, signed with the deployment's share key (HMAC-SHA256).

A token reads ``{job id}.{result index}.{expiry, Unix seconds}.{signature}``; the signature (URL-safe base64,
unpadded) covers the three fields before it, so none can be changed without the key. Nothing is stored: a link is
valid wherever the same key is, until it expires or its job does. The key is 32 random bytes in a file
(``jobs.secret_file``), never logged or shown in a ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from jobs.errors import ShareLinkExpired, ShareLinkInvalid
from jobs.secret_file import read_secret_file

KEY_PREFIX = "shk_"
KEY_BYTES = 32
KEY_FILE = "share-key"
"""The generated key's file in the run directory, when the operator names none."""
TOKEN = re.compile(r"(?P<job>j_[A-Za-z0-9_-]{1,64})\.(?P<index>\d{1,4})\.(?P<expires>\d{1,12})"
                   r"\.(?P<sig>[A-Za-z0-9_-]{43})")
"""A token as this module writes it; anything else is refused before any HMAC is computed."""


def new_key() -> str:
    """A fresh share key: ``shk_`` and 32 random bytes in URL-safe base64."""
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def key_bytes(key: str) -> bytes:
    """The key's bytes; ValueError (in words) for anything that is not ``shk_`` and 32 bytes in base64."""
    if not key.startswith(KEY_PREFIX):
        raise ValueError("a share key starts with shk_ (make one with jobs.api.share_tokens.new_key)")
    try:
        raw = base64.urlsafe_b64decode(key.removeprefix(KEY_PREFIX))
    except ValueError:
        raise ValueError("a share key is shk_ followed by URL-safe base64") from None
    if len(raw) < KEY_BYTES:
        raise ValueError(f"a share key holds at least {KEY_BYTES} random bytes")
    return raw


@dataclass(frozen=True)
class Shared:
    """What a valid token grants: this result of this job until ``expires_at``."""

    job_id: str
    index: int
    expires_at: datetime


class ShareSigner:
    """Signs and checks share-link tokens with one key."""

    def __init__(self, key: str) -> None:
        self._key = key_bytes(key)

    def __repr__(self) -> str:
        return "ShareSigner(key=<hidden>)"

    def _signature(self, job_id: str, index: int, expires: int) -> str:
        digest = hmac.new(self._key, f"share.v1.{job_id}.{index}.{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def token(self, job_id: str, index: int, expires_at: datetime) -> str:
        """The token for result ``index`` of ``job_id`` until ``expires_at`` (whole seconds)."""
        expires = int(expires_at.timestamp())
        return f"{job_id}.{index}.{expires}.{self._signature(job_id, index, expires)}"

    def check(self, token: str, now: datetime | None = None) -> Shared:
        """What ``token`` grants; ``ShareLinkInvalid`` if forged or altered, ``ShareLinkExpired`` past its time."""
        parsed = TOKEN.fullmatch(token)
        if parsed is None:
            raise ShareLinkInvalid()
        job_id, index, expires = parsed["job"], int(parsed["index"]), int(parsed["expires"])
        if not hmac.compare_digest(parsed["sig"], self._signature(job_id, index, expires)):
            raise ShareLinkInvalid()
        expires_at = datetime.fromtimestamp(expires, UTC)
        if (now or datetime.now(UTC)) >= expires_at:
            raise ShareLinkExpired(expires_at.strftime("%Y-%m-%d %H:%M:%S UTC"))
        return Shared(job_id, index, expires_at)


def read_share_key(path: Path, create: bool = False) -> str:
    """The share key in the file ``path``; with ``create``, a missing file is first made with a new key."""
    return read_secret_file(path, "share-link key", new_key, key_bytes, create=create)
