"""Browser sign-in sessions: a token naming a member of an account, until a time, signed (HMAC-SHA256) with a key
derived from the cluster secret, which the sidecar gives every web front and jobs service alike: a session made
through one web front is good at every other, and at the jobs service it is passed on to.

A token reads ``s1.{account id}.{user, base64}.{issued}.{expires}.{signature}`` (Unix seconds; URL-safe base64,
unpadded), cookie-safe as it is. The signature covers every field before it, so none can be changed without the
key. Whether the member still exists is the jobs service's to say (``/v1/sessions/current``), not the token's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SESSION_COOKIE = "portrait_session"
"""The browser cookie that carries the token."""
AUTH_SCHEME = "Session"
"""``Authorization: Session <token>``: how a web front tells the jobs service whose request it passes on."""
TOKEN = re.compile(r"s1\.(?P<account>acc_[A-Za-z0-9_-]{1,40})\.(?P<user>[A-Za-z0-9_-]{1,400})\.(?P<issued>\d{1,12})"
                   r"\.(?P<expires>\d{1,12})\.(?P<sig>[A-Za-z0-9_-]{43})")
"""A token as this module writes it; anything else is refused before any HMAC is computed."""
KEY_PURPOSE = b"portrait-ha browser session v1"


@dataclass(frozen=True)
class Session:
    """What a valid token says: ``user`` of the account ``account_id``, signed in at ``issued_at``."""

    account_id: str
    user: str
    issued_at: datetime
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


class SessionSigner:
    """Makes and checks session tokens with the key derived from ``cluster_secret``."""

    def __init__(self, cluster_secret: str) -> None:
        self._key = hmac.new(cluster_secret.encode(), KEY_PURPOSE, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "SessionSigner(key=<hidden>)"

    def _signature(self, fields: str) -> str:
        return _b64(hmac.new(self._key, fields.encode(), hashlib.sha256).digest())

    def token(self, account_id: str, user: str, now: datetime, lasts: timedelta) -> str:
        """A token for ``user`` of ``account_id``, signed in at ``now``, good for ``lasts``."""
        fields = f"s1.{account_id}.{_b64(user.encode())}.{int(now.timestamp())}.{int((now + lasts).timestamp())}"
        return f"{fields}.{self._signature(fields)}"

    def check(self, token: str, now: datetime | None = None) -> Session | None:
        """The session ``token`` holds, or None when it is malformed, forged, altered or expired."""
        parsed = TOKEN.fullmatch(token)
        if parsed is None:
            return None
        fields = token.rsplit(".", 1)[0]
        if not hmac.compare_digest(parsed["sig"], self._signature(fields)):
            return None
        expires_at = datetime.fromtimestamp(int(parsed["expires"]), UTC)
        if (now or datetime.now(UTC)) >= expires_at:
            return None
        try:
            user = base64.urlsafe_b64decode(parsed["user"] + "=" * (-len(parsed["user"]) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return Session(parsed["account"], user, datetime.fromtimestamp(int(parsed["issued"]), UTC), expires_at)


def session_token(authorization: str | None) -> str | None:
    """The token in an ``Authorization: Session <token>`` header value, else None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == AUTH_SCHEME.lower() else None
