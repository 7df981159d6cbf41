"""The public site's HTTP basic auth in ``haproxy.cfg``: throttled, constant-time, and checked once.

A password hash (crypt(3), e.g. SHA-512 with 5000 rounds) costs HAProxy's single thread a few
milliseconds, and HAProxy's ``http_auth`` runs it on every request. So:

- a login whose hash matched is remembered by the SHA-256 of its ``Authorization`` header
  (table ``logins``) for ``auth_session_minutes``: later requests with it skip the hash;
- failed logins are counted per client address and per user name (``login_failures_by_*``);
  past either limit a login gets 429 with Retry-After before any hash is computed;
- an unknown user name costs what a known one does: its password is checked against a decoy
  with a site user's very hash (the answer is never used: such a request is always refused),
  so timing does not tell which names exist.

Stick counters used: ``sc3`` (address), ``sc4`` (user name), ``sc5`` (remembered login).
The directives are in ``templates/login.cfg.j2``; this module gives them their values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from balancer.haproxy.answers import Answer, answer
from balancer.haproxy.users import User

LOGINS_TABLE = "logins"
"""Logins whose password hash matched, keyed by the SHA-256 of their Authorization header."""
FAILURES_BY_ADDRESS = "login_failures_by_address"
FAILURES_BY_USER = "login_failures_by_user"
SITE_USERS = "site_users"
DECOY_USERS = "login_decoy"
DECOY_USER = "decoy"
FRESH = "!login_known"
"""The condition of every rule that costs: a login not checked before."""


@dataclass(frozen=True)
class Login:
    """What ``templates/login.cfg.j2`` needs: the users, the tables' names, the limits and their answers."""

    source: str
    users: tuple[User, ...]
    session_minutes: int
    too_many_by_address: Answer
    too_many_by_user: Answer
    logins_table: str = LOGINS_TABLE
    by_address_table: str = FAILURES_BY_ADDRESS
    by_user_table: str = FAILURES_BY_USER
    site_users: str = SITE_USERS
    decoy_users: str = DECOY_USERS
    decoy_user: str = DECOY_USER
    fresh: str = FRESH

    @property
    def names(self) -> str:
        return " ".join(user.name for user in self.users)

    @property
    def decoy_hash(self) -> str:
        """A site user's very hash: checking against it costs what a real check does."""
        return self.users[0].password_hash


def login_values(source: Path, users: list[User], per_address: int, per_user: int, session_minutes: int) -> Login:
    """The basic auth values for ``users`` (read from ``source``) and the failed-login limits."""
    retry = "Wait a minute and retry."

    def too_many(limit: int, per: str, counter: int) -> Answer:
        return answer(429, "too_many_logins", f"At most {limit} failed logins a minute per {per}. {retry}",
                      f"{FRESH} {{ sc_gpc_rate(0,{counter}) ge {limit} }}", "Too many failed logins",
                      headers="hdr Retry-After 60")

    return Login(str(source), tuple(users), session_minutes, too_many(per_address, "client", 3),
                 too_many(per_user, "user", 4))
