"""Who is asking: ``Authorization: Bearer <API key>`` makes the key's account the caller, checked against the
store (through a cache of at most ``KEY_CACHE_SECONDS``, so a revoked key is refused on every service within
that). A web front passes on its signed-in page user's session (``Authorization: Session``, ``sessions``): the
request acts for the member's account, checked in the store on every request. Without either, it acts for its site
login (``owners.owner_of``: the basic-auth user name HAProxy
checked) when the site has one (``--site-login``), else it is anonymous. An account's jobs are its own; a login's
or the anonymous jobs can be read by anyone without a key who holds their id, as before accounts.

Identity comes only from this check: no header a client sends names an account. The scope a request needs
follows from its method (``SCOPE_FOR_METHOD``); a job of another owner is answered as if it did not exist.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from anyio.to_thread import run_sync
from fastapi import Depends, Request
from sqlalchemy import Engine

from jobs.api.owners import owner_of
from jobs.api.sessions import sessions_of
from jobs.contract import (
    ANONYMOUS,
    KEY_CACHE_SECONDS,
    LAST_USED_EVERY,
    SCOPE_ADMIN,
    SCOPE_GENERATE,
    SCOPE_HISTORY,
    SCOPES,
)
from jobs.errors import JobGone, JobNotFound
from jobs.store import ApiKey, Job, find_key, get, key_hash, touch_key
from jobs.store.accounts import ACCOUNT_ID_PREFIX
from jobs.store.records import utc_now
from webui.session_token import AUTH_SCHEME
from webui.worker.job_parsing import ApiError

logger = logging.getLogger(__name__)

SCOPE_FOR_METHOD = {"GET": SCOPE_HISTORY, "HEAD": SCOPE_HISTORY, "DELETE": SCOPE_HISTORY, "POST": SCOPE_GENERATE}
"""Reading and tidying the account's jobs needs ``history``; submitting and acting on them ``generate``; any other
method ``admin``."""
SESSION_SCOPES = frozenset({SCOPE_GENERATE, SCOPE_HISTORY})
"""What a signed-in member may do on the page: generate, and read and tidy their account's jobs."""
CACHE_SIZE = 10_000
"""The most keys one service remembers (the oldest looked-up go first)."""


@dataclass(frozen=True)
class Caller:
    """The owner a request acts for (an account's id, or ``ANONYMOUS``) and what it may do."""

    owner: str
    scopes: frozenset[str]
    key_prefix: str | None = None
    """The API key's visible prefix; None for a caller without a key."""
    member: str | None = None
    """The signed-in member a web front passes on (``Authorization: Session``); None for any other caller."""

    @property
    def account(self) -> bool:
        return self.key_prefix is not None or self.member is not None

    def may(self, scope: str) -> bool:
        return scope in self.scopes or SCOPE_ADMIN in self.scopes


ANONYMOUS_CALLER = Caller(ANONYMOUS, frozenset(SCOPES))


def unauthorized(error: str, detail: str) -> ApiError:
    return ApiError(401, error, detail, headers={"WWW-Authenticate": 'Bearer realm="portrait-ha", '
                                                                      'error="invalid_token"'})


@dataclass
class _Looked:
    key: ApiKey | None
    at: datetime


class KeyCache:
    """API keys looked up in the store and trusted for ``seconds``; ``verify`` blocks (run it in a thread).

    A key's last-used time is written at most once per ``LAST_USED_EVERY``; ``now`` is injectable for tests."""

    def __init__(self, engine: Engine, seconds: float = KEY_CACHE_SECONDS,
                 now: Callable[[], datetime] = utc_now) -> None:
        self.engine, self.ttl, self.now = engine, timedelta(seconds=seconds), now
        self._looked: dict[str, _Looked] = {}
        self._touched: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def verify(self, token: str) -> Caller:
        """The caller ``token`` makes; ``ApiError`` 401 when it is no key, or a revoked one."""
        now, digest = self.now(), key_hash(token)
        with self._lock:
            looked = self._looked.get(digest)
        if looked is None or now - looked.at >= self.ttl:
            looked = _Looked(find_key(self.engine, token), now)
            if looked.key is not None:
                self._remember(digest, looked)
        key = looked.key
        if key is None:
            raise unauthorized("invalid_api_key", "This API key is not valid: check that it was copied whole, or "
                               "ask your account's admin for a new one.")
        if key.revoked_at is not None:
            raise unauthorized("revoked_api_key", f"The API key {key.prefix}… was revoked on "
                               f"{key.revoked_at:%Y-%m-%d %H:%M} UTC; ask your account's admin for a new one.")
        if now - self._touched.get(key.id, datetime.min.replace(tzinfo=now.tzinfo)) >= LAST_USED_EVERY:
            if len(self._touched) >= CACHE_SIZE:
                self._touched.clear()
            self._touched[key.id] = now
            touch_key(self.engine, key.id, now)
        return Caller(key.account_id, frozenset(key.scopes), key.prefix)

    def forget(self, key_id: str) -> None:
        """Look the key ``key_id`` up again at its next use (revoked here: refused at once by this service)."""
        with self._lock:
            for digest in [digest for digest, looked in self._looked.items() if looked.key and looked.key.id == key_id]:
                del self._looked[digest]

    def _remember(self, digest: str, looked: _Looked) -> None:
        with self._lock:
            if len(self._looked) >= CACHE_SIZE:
                self._looked.pop(next(iter(self._looked)))
            self._looked.pop(digest, None)
            self._looked[digest] = looked


async def caller(request: Request) -> Caller:
    """The request's caller, allowed the scope its method needs (401 for a bad key, 403 for a missing scope)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == AUTH_SCHEME.lower():
        member, _session = await run_sync(sessions_of(request).verify, token.strip())
        return Caller(member.account_id, SESSION_SCOPES, member=member.user)
    if scheme.lower() != "bearer":
        login = owner_of(request) if request.app.state.site_login else ANONYMOUS
        return ANONYMOUS_CALLER if login == ANONYMOUS else Caller(login, ANONYMOUS_CALLER.scopes)
    if not token.strip():
        raise unauthorized("invalid_api_key", "The Authorization header says Bearer but carries no API key.")
    keys: KeyCache = request.app.state.keys
    who = await run_sync(keys.verify, token.strip())
    needed = SCOPE_FOR_METHOD.get(request.method, SCOPE_ADMIN)
    if not who.may(needed):
        raise ApiError(403, "missing_scope", f"The API key {who.key_prefix}… may not do this: it needs the "
                       f"{needed} scope and has {', '.join(sorted(who.scopes))}. Ask your account's admin for a key "
                       f"with {needed}.", headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", '
                                                                        f'scope="{needed}"'})
    return who


Who = Annotated[Caller, Depends(caller)]


def visible(owner: str | None, who: Caller) -> bool:
    """Whether ``who`` may act on a job of ``owner``: an account's job only with its key; any other job to anyone
    without a key (the page and the site's logins read jobs by id, as before accounts)."""
    if who.account or (owner or "").startswith(ACCOUNT_ID_PREFIX):
        return owner == who.owner
    return True


def owned(engine: Engine, job_id: str, who: Caller) -> Job:
    """The job ``job_id`` when ``who`` may act on it (blocking, see ``visible``); another's job, expired or not, is
    answered as unknown (404), never as forbidden or gone."""
    try:
        job = get(engine, job_id)
    except JobGone as gone:
        if not visible(gone.owner, who):
            raise JobNotFound(job_id) from None
        raise
    if not visible(job.owner, who):
        raise JobNotFound(job_id)
    return job
