"""HTTP basic auth for the sidecar's actions (``POST /retry``, ...), with the stats page's user and password.

``BasicAuth`` is a starlette authentication backend: behind ``AuthenticationMiddleware`` a request with the
right user and password has the scope ``OPERATOR``; an action's route asks for it with
``requires(OPERATOR, status_code=401)``, and the app's handler for 401 answers ``challenge``.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

REALM = "portrait-ha sidecar"
OPERATOR = "operator"
"""The scope of a request that carries the stats page's user and password."""


@dataclass(frozen=True)
class BasicAuth(AuthenticationBackend):
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

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        """The scope ``OPERATOR`` when the request carries this user and password; else none (no error)."""
        if not self.allows(conn.headers.get("authorization")):
            return None
        return AuthCredentials([OPERATOR]), SimpleUser(self.user)

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


async def unauthorized(request: Request, exc: Exception) -> JSONResponse:
    """The app's answer to ``requires(OPERATOR, status_code=401)``: the challenge, naming the action
    (``POST /retry``: the method and the path's first segment)."""
    return BasicAuth.challenge(f"{request.method} /{request.url.path.split('/')[1]}")
