"""Browser sign-in at the jobs service: ``POST /v1/sessions`` checks a member's password and makes a session token;
``GET /v1/sessions/current`` says whose session a token is, while its member still exists.

Only web fronts call these (the balancer routes ``/v1/sessions`` from its worker-queue listener, never from the
public site): the page's user signs in at a web front, which keeps the token in a cookie and passes it on with
each request it makes for them (``Authorization: Session``, ``auth.caller``). Failed sign-ins are counted per
member name in the store (``sign_in_failures``), so every service locks the same name; an unknown name fails and
counts like a wrong password, in the same time, so the answer never tells which names exist.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from anyio.to_thread import run_sync
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from jobs.contract import SESSION_HOURS, SESSIONS_PREFIX
from jobs.store.passwords import MAX_PASSWORD, SignInMember, dummy_hash, sign_in_member, verify_password
from jobs.store.records import utc_now
from jobs.store.sign_in_failures import clear_failures, locked_for, record_failure, sign_in_name
from webui.session_token import Session, SessionSigner, session_token
from webui.worker.job_parsing import ApiError

logger = logging.getLogger(__name__)

router = APIRouter(prefix=SESSIONS_PREFIX, tags=["sessions"])


class SignIn(BaseModel):
    account: str = Field(min_length=1, max_length=100)
    user: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class SessionView(BaseModel):
    account_id: str
    account: str
    user: str
    role: str
    expires_at: datetime
    token: str | None = None
    """Only in the answer to a sign-in."""


def session_refused() -> ApiError:
    return ApiError(401, "session_invalid", "This sign-in has ended (signed out elsewhere, the member was removed, "
                    "or the password changed): sign in again.")


@dataclass
class Sessions:
    """Signs members in and checks their sessions against ``engine``; ``verify`` blocks (run it in a thread)."""

    engine: Engine
    signer: SessionSigner
    lasts: timedelta = timedelta(hours=SESSION_HOURS)

    def sign_in(self, form: SignIn) -> SessionView:
        """A session for the member ``form`` names, when its password is theirs; ``ApiError`` 429 while the name is
        locked, 401 otherwise."""
        name, now = sign_in_name(form.account, form.user), utc_now()
        locked = locked_for(self.engine, name, now)
        if locked is not None:
            minutes = max(1, math.ceil(locked.total_seconds() / 60))
            raise ApiError(429, "sign_in_locked", f"Too many failed sign-ins; try again in {minutes} minute"
                           f"{'s' if minutes != 1 else ''}.", headers={"Retry-After": str(math.ceil(
                               locked.total_seconds()))})
        member = sign_in_member(self.engine, form.account, form.user)
        stored = member.password_hash if member is not None else None
        if not verify_password(form.password, stored or dummy_hash()) or stored is None or member is None:
            record_failure(self.engine, name, now)
            logger.info("sign-in of %s refused", name)
            raise ApiError(401, "sign_in_failed", "The account, name or password is not right.")
        clear_failures(self.engine, name)
        logger.info("%s signed in", name)
        token = self.signer.token(member.account_id, member.user, now, self.lasts)
        return view(member, now + self.lasts, token)

    def verify(self, token: str) -> tuple[SignInMember, Session]:
        """The member whose session ``token`` is: signed here, unexpired, the member still there and their
        password unchanged since; ``ApiError`` 401 otherwise."""
        session = self.signer.check(token)
        if session is None:
            raise session_refused()
        member = sign_in_member(self.engine, None, session.user, account_id=session.account_id)
        if member is None or member.password_hash is None:
            raise session_refused()
        if member.password_set_at is not None and int(member.password_set_at.timestamp()) > int(
                session.issued_at.timestamp()):
            raise session_refused()
        return member, session


def view(member: SignInMember, expires_at: datetime, token: str | None = None) -> SessionView:
    return SessionView(account_id=member.account_id, account=member.account, user=member.user, role=member.role,
                       expires_at=expires_at, token=token)


def sessions_of(request: Request) -> Sessions:
    sessions = request.app.state.sessions
    if sessions is None:
        raise ApiError(503, "sign_in_off", "Browser sign-in is off here: this jobs service has no cluster secret.")
    return sessions


@router.post("", status_code=201, response_model=SessionView, response_model_exclude_none=True)
async def sign_in(form: SignIn, request: Request) -> SessionView:
    """Sign a member in: their session's token (for the web front's cookie), whose it is and until when."""
    return await run_sync(sessions_of(request).sign_in, form)


@router.get("/current", response_model=SessionView, response_model_exclude_none=True)
async def current(request: Request) -> SessionView:
    """Whose session the request's ``Authorization: Session`` token is (401 when it is no longer good)."""
    sessions = sessions_of(request)
    token = session_token(request.headers.get("authorization"))
    if token is None:
        raise session_refused()
    member, session = await run_sync(sessions.verify, token)
    return view(member, session.expires_at)
