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
"""

from __future__ import annotations

from typing import Protocol

from balancer.haproxy.answers import answer

LOGINS_TABLE = "logins"
"""Logins whose password hash matched, keyed by the SHA-256 of their Authorization header."""
FAILURES_BY_ADDRESS = "login_failures_by_address"
FAILURES_BY_USER = "login_failures_by_user"
SITE_USERS = "site_users"
DECOY_USERS = "login_decoy"
DECOY_USER = "decoy"


class SiteUser(Protocol):
    name: str
    password_hash: str


class LoginRules:
    """The userlists, tables and public frontend rules for basic auth over ``users``."""

    def __init__(self, users: list[SiteUser], per_address: int, per_user: int, session_minutes: int) -> None:
        self.users = users
        self.per_address = per_address
        self.per_user = per_user
        self.session_minutes = session_minutes

    def userlists(self, source: str) -> list[str]:
        """The site's users (from ``source``) and the decoy that unknown user names are checked against."""
        return [
            "",
            f"# Site users (HTTP basic auth for everything public), from {source}.",
            f"userlist {SITE_USERS}",
            *(f"    user {user.name} password {user.password_hash}" for user in self.users),
            "",
            "# Never a way in: an unknown user name's password is checked against this (a site user's",
            "# hash, so it costs the same time) and the request refused whatever the answer.",
            f"userlist {DECOY_USERS}",
            f"    user {DECOY_USER} password {self.users[0].password_hash}",
        ]

    def tables(self) -> list[str]:
        """The stick tables (one backend each: a frontend holds one table)."""
        failures = "expire 2m store gpc(1),gpc_rate(1,1m)"
        return [
            "# Logins whose password matched, by the SHA-256 of their Authorization header.",
            f"backend {LOGINS_TABLE}",
            f"    stick-table type binary len 32 size 10k expire {self.session_minutes}m",
            "",
            "# Failed logins a minute per client address and per user name.",
            f"backend {FAILURES_BY_ADDRESS}",
            f"    stick-table type ip size 100k {failures}",
            "",
            f"backend {FAILURES_BY_USER}",
            f"    stick-table type string len 64 size 100k {failures}",
        ]

    def rules(self) -> list[str]:
        """The public frontend's rules: after the client's address (``txn.client``) is known."""
        names = " ".join(user.name for user in self.users)
        fresh = "!login_known"
        given = "{ req.hdr(authorization) -m found }"
        retry = "Wait a minute and retry."
        return [
            "    # HTTP basic auth for the whole site; a password hash costs milliseconds of the one thread.",
            "    # A login checked before skips the hash (its header's SHA-256 is remembered).",
            f"    acl login_known req.hdr(authorization),digest(sha256),in_table({LOGINS_TABLE})",
            f"    acl login_user http_auth_user -m str {names}",
            "    # Failed logins per client address and per user name: past either limit, 429 before any hash.",
            f"    http-request track-sc3 var(txn.client) table {FAILURES_BY_ADDRESS} if {fresh}",
            f"    http-request track-sc4 http_auth_user table {FAILURES_BY_USER} if {fresh}",
            *answer(429, "too_many_logins", f"At most {self.per_address} failed logins a minute per client. {retry}",
                    f"{fresh} {{ sc_gpc_rate(0,3) ge {self.per_address} }}", "Too many failed logins",
                    headers="hdr Retry-After 60"),
            *answer(429, "too_many_logins", f"At most {self.per_user} failed logins a minute per user. {retry}",
                    f"{fresh} {{ sc_gpc_rate(0,4) ge {self.per_user} }}", "Too many failed logins",
                    headers="hdr Retry-After 60"),
            "    # One hash per request at most: a known user's, else the decoy's (same cost, never a way in).",
            f"    http-request set-var(txn.login_ok) http_auth({SITE_USERS}) if {fresh} login_user",
            f"    http-request set-var(txn.login_pass) http_auth_pass if {fresh} !login_user",
            "    acl decoy var(txn.login_pass) -m found",
            f'    http-request set-header Authorization "Basic %[str({DECOY_USER}:),concat(,txn.login_pass,),base64]"'
            " if decoy",
            f"    http-request set-var(txn.login_decoy) http_auth({DECOY_USERS}) if decoy",
            "    acl login_ok var(txn.login_ok) -m bool",
            f"    http-request sc-inc-gpc(0,3) if {fresh} !login_ok {given}",
            f"    http-request sc-inc-gpc(0,4) if {fresh} !login_ok {given}",
            f"    http-request track-sc5 req.hdr(authorization),digest(sha256) table {LOGINS_TABLE} if login_ok",
            '    http-request auth realm "portrait-ha" unless login_known || login_ok',
        ]
