"""An account's admin page at the jobs service (``/v1/account``): its members and API keys, for a signed-in admin.

Every route acts for the member whose browser session a web front passes on (``Authorization: Session``,
``sessions``), and only on that member's own account: a member or key of another account is answered as unknown
(404). A member whose role is not ``admin`` gets 403. Changes go through the same store functions as ``python -m
jobs accounts``; a key is shown once, in the answer that creates it. An admin cannot remove themselves or take away
their own admin role here (another admin, or the command line, can), so an account never loses its last admin by a
click. Like ``/v1/sessions``, the balancer routes these from its worker-queue listener only.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Literal

from anyio.to_thread import run_sync
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from jobs.api.auth import KeyCache
from jobs.api.sessions import sessions_of
from jobs.contract import ACCOUNT_PREFIX, ROLES, SCOPES
from jobs.store import ApiKey, add_member, create_key, list_keys, members, remove_member, revoke_key
from jobs.store.passwords import MAX_PASSWORD, SignInMember, check_password_rules, set_password
from webui.session_token import session_token
from webui.worker.job_parsing import ApiError

logger = logging.getLogger(__name__)

router = APIRouter(prefix=ACCOUNT_PREFIX, tags=["account"])


async def account_admin(request: Request) -> SignInMember:
    """The signed-in member the request acts for, when they are an admin of their account (401, 403 otherwise)."""
    token = session_token(request.headers.get("authorization"))
    if token is None:
        raise ApiError(401, "session_required", "Managing an account needs its admin, signed in on the studio page.")
    member, _session = await run_sync(sessions_of(request).verify, token)
    if member.role != "admin":
        raise ApiError(403, "admins_only", f"Only the admins of {member.account} manage its members and API keys; "
                       "ask one of them.")
    return member


Admin = Annotated[SignInMember, Depends(account_admin)]


class MemberView(BaseModel):
    user: str
    role: str
    added_at: datetime


class KeyView(BaseModel):
    id: str
    prefix: str
    label: str | None
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    key: str | None = None
    """The key itself: only in the answer that creates it."""


class AccountView(BaseModel):
    account: str
    user: str
    """The signed-in admin."""
    members: list[MemberView]
    keys: list[KeyView]


class MemberChange(BaseModel):
    role: Literal[ROLES] = "member"  # type: ignore[valid-type]
    password: str | None = Field(default=None, max_length=MAX_PASSWORD)
    """A new sign-in password for them (their earlier sessions end); None keeps theirs."""


class NewKey(BaseModel):
    scopes: list[Literal[SCOPES]] = Field(min_length=1, max_length=len(SCOPES))  # type: ignore[valid-type]
    label: str | None = Field(default=None, max_length=100)


def key_view(key: ApiKey, secret: str | None = None) -> KeyView:
    return KeyView(id=key.id, prefix=key.prefix, label=key.label, scopes=list(key.scopes), created_at=key.created_at,
                   last_used_at=key.last_used_at, revoked_at=key.revoked_at, key=secret)


def not_yourself(admin: SignInMember, user: str, what: str) -> None:
    if user == admin.user:
        raise ApiError(409, "own_admin_role", f"You cannot {what} yourself here; another admin of {admin.account} "
                       "can.")


def engine_of(request: Request):
    return request.app.state.jobs_api.engine


@router.get("", response_model=AccountView)
async def account(admin: Admin, request: Request) -> AccountView:
    """The admin's account: its members and its API keys (never the keys themselves)."""
    engine = engine_of(request)
    people = await run_sync(members, engine, admin.account)
    keys = await run_sync(list_keys, engine, admin.account)
    return AccountView(account=admin.account, user=admin.user, keys=[key_view(key) for key in keys],
                       members=[MemberView(user=m.user, role=m.role, added_at=m.added_at) for m in people])


@router.put("/members/{user:path}", response_model=MemberView)
async def put_member(user: Annotated[str, Path(max_length=200)], change: MemberChange, admin: Admin,
                     request: Request) -> MemberView:
    """Add ``user`` to the account with ``role``, or change their role; with ``password``, set their password."""
    if change.role != "admin":
        not_yourself(admin, user, "take the admin role from")
    engine = engine_of(request)
    try:
        if change.password is not None:
            check_password_rules(change.password)  # before the member is added
        member = await run_sync(add_member, engine, admin.account, user, change.role)
        if change.password is not None:
            await run_sync(set_password, engine, admin.account, user, change.password)
    except ValueError as error:
        raise ApiError(422, "invalid_request", f"{str(error)[:1].upper()}{str(error)[1:]}.") from None
    logger.info("%s of %s: %s is a %s", admin.user, admin.account, user, change.role)
    return MemberView(user=member.user, role=member.role, added_at=member.added_at)


@router.delete("/members/{user:path}", status_code=204)
async def delete_member(user: Annotated[str, Path(max_length=200)], admin: Admin, request: Request) -> Response:
    """``user`` is no longer a member: their browser sessions end (404 when they are no member here)."""
    not_yourself(admin, user, "remove")
    await run_sync(remove_member, engine_of(request), admin.account, user)
    return Response(status_code=204)


@router.post("/keys", status_code=201, response_model=KeyView)
async def new_key(body: NewKey, admin: Admin, request: Request) -> KeyView:
    """A new API key for the account: the answer is the only time the key itself is shown."""
    key, secret = await run_sync(create_key, engine_of(request), admin.account, body.scopes, body.label or None)
    return key_view(key, secret)


@router.post("/keys/{key_id}/revoke", response_model=KeyView)
async def revoke(key_id: Annotated[str, Path(max_length=100)], admin: Admin, request: Request) -> KeyView:
    """Refuse the key from now on (this service at once, every other within its key cache time)."""
    key = await run_sync(lambda: revoke_key(engine_of(request), key_id, account=admin.account))
    keys: KeyCache = request.app.state.keys
    keys.forget(key.id)
    return key_view(key)
