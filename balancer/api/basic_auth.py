"""HTTP basic auth for the sidecar's actions (``POST /retry``), with the stats page's user and password."""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.responses import JSONResponse

REALM = "portrait-ha sidecar"


@dataclass(frozen=True)
class BasicAuth:
    """One user and password; ``allows`` checks an ``Authorization`` header in constant time."""

    user: str
    password: SecretStr

    def allows(self, authorization: str | None) -> bool:
        """Whether the header carries exactly this user and password."""
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, colon, password = decoded.partition(b":")
        user_ok = secrets.compare_digest(user, self.user.encode())
        password_ok = secrets.compare_digest(password, self.password.get_secret_value().encode())
        return bool(colon) and user_ok and password_ok

    @staticmethod
    def challenge(action: str) -> JSONResponse:
        """The 401 answer: asks for credentials, says which ones."""
        return JSONResponse(
            {
                "error": "unauthorized",
                "detail": f"{action} needs the stats page's user and password (HTTP basic auth).",
                "fields": [],
            },
            status_code=401,
            headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
        )
