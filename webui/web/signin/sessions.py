"""Whether a session cookie is good: signed with this cluster's secret and unexpired (here, at once), and its member
still there with the same password (asked of the jobs service, remembered ``CHECK_SECONDS``).

A removed member or a changed password is refused within ``CHECK_SECONDS`` by every web front. Should the jobs
service not answer, a cookie it has not confirmed lately is not trusted (``SessionUnknown``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from webui.session_token import AUTH_SCHEME, SessionSigner
from webui.web.jobs_client import JobsClient, JobsError
from webui.web.jobs_wire import SignedIn

logger = logging.getLogger(__name__)

CHECK_SECONDS = 4.0
"""How long a web front trusts the jobs service's word on a session (the store is asked on every job request)."""
CACHE_SIZE = 10_000
"""The most sessions one web front remembers (the oldest checked go first)."""


class SessionUnknown(Exception):
    """The jobs service could not say whether a session is good (``str``: why, for the user)."""


@dataclass
class _Checked:
    member: SignedIn | None
    at: float


def login_header(token: str) -> str:
    """The ``Authorization`` value that passes the session on to the jobs service."""
    return f"{AUTH_SCHEME} {token}"


class SessionCheck:
    """Checks session tokens: ``member`` is the signed-in member, or None for a token that is not (or no longer)
    good."""

    def __init__(self, signer: SessionSigner, jobs: JobsClient, seconds: float = CHECK_SECONDS) -> None:
        self.signer, self.jobs, self.seconds = signer, jobs, seconds
        self._checked: dict[str, _Checked] = {}

    async def member(self, token: str | None) -> SignedIn | None:
        if not token or self.signer.check(token) is None:  # forged, altered or expired: no need to ask
            return None
        checked = self._checked.get(token)
        if checked is None or time.monotonic() - checked.at >= self.seconds:
            try:
                member = await self.jobs.session(login_header(token))
            except JobsError as exc:
                if exc.status != 401:
                    raise SessionUnknown(str(exc)) from None
                member = None
            checked = self._remember(token, member)
        return checked.member

    def remember(self, token: str, member: SignedIn) -> None:
        """A session just made: good, without asking."""
        self._remember(token, member)

    def _remember(self, token: str, member: SignedIn | None) -> _Checked:
        if len(self._checked) >= CACHE_SIZE:
            self._checked.pop(next(iter(self._checked)))
        self._checked.pop(token, None)
        self._checked[token] = checked = _Checked(member, time.monotonic())
        return checked
